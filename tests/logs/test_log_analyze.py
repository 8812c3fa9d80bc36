"""``reactive-services logs analyze``: the shipped datasets, other loghub-style files, masks, bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reactive_services.cli import main
from reactive_services.examples.shop.log_sources import DRAIN_PUBLISHED
from reactive_services.logs import grouping_accuracy

SHIPPED = Path(__file__).resolve().parents[2] / "examples" / "shop" / "data" / "loghub"
OTHER = Path(__file__).resolve().parents[1] / "data" / "loghub"


def run(tmp_path: Path, file: Path, *args: str) -> tuple[dict[str, Any], list[dict[str, str]]]:
    report_path, assignments_path = tmp_path / "report.json", tmp_path / "assignments.csv"
    code = main(
        [
            "logs",
            "analyze",
            str(file),
            *args,
            "--quiet",
            "--report",
            str(report_path),
            "--assignments",
            str(assignments_path),
        ]
    )
    assert code == 0
    with open(assignments_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return json.loads(report_path.read_text()), rows


def ground_truth(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def line_count(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


@pytest.mark.parametrize("name", sorted(DRAIN_PUBLISHED))
def test_each_shipped_dataset(tmp_path: Path, name: str) -> None:
    file = SHIPPED / f"{name}_2k.log"
    report, rows = run(tmp_path, file, "--format", name)
    n = line_count(file)
    assert report["lines"] == n == len(rows) and report["unparsed"] == 0
    assert [int(r["line_no"]) for r in rows] == list(range(1, n + 1))
    # every line is in exactly one tumbling window, or late
    assert sum(w["lines"] for w in report["windows"]) + report["late"] == n
    assert sum(t["lines"] for t in report["templates"]) == n
    # the assignments group the lines at least as well as Drain does (loghub ground truth)
    truth = [row["EventId"] for row in ground_truth(SHIPPED / f"{name}_2k.log_structured.csv")]
    assert grouping_accuracy([r["template_id"] for r in rows], truth) >= DRAIN_PUBLISHED[name]
    # one template text per id, equal to the report's
    texts = {t["template_id"]: t["template"] for t in report["templates"]}
    assert all(texts[int(r["template_id"])] == r["template"] for r in rows)
    assert set(report) >= {"lines", "unparsed", "by_level", "templates", "windows", "alerts"}


def test_shipped_format_given_as_a_format_string(tmp_path: Path) -> None:
    report, rows = run(tmp_path, SHIPPED / "Apache_2k.log", "--format", r"\[<Time>\] \[<Level>\] <Content>")
    assert report["unparsed"] == 0 and report["time"] == "%a %b %d %H:%M:%S %Y"
    levels: dict[str, int] = {}
    for row in ground_truth(SHIPPED / "Apache_2k.log_structured.csv"):
        levels[row["Level"]] = levels.get(row["Level"], 0) + 1
    assert report["by_level"] == levels
    # 10-minute windows (the default): as many as distinct 10-minute slots in the ground truth's Time column
    slots = {
        datetime.strptime(r["Time"], "%a %b %d %H:%M:%S %Y").strftime("%Y%m%d%H%M")[:-1]
        for r in ground_truth(SHIPPED / "Apache_2k.log_structured.csv")
    }
    assert len(report["windows"]) == len(slots)


# loghub datasets the shop does not ship, with the logparser benchmark's format strings, and how
# to read the time of a ground-truth row (written here, independently of the code under test)
OTHER_FORMATS = {
    "Zookeeper": (
        r"<Date> <Time> - <Level>  \[<Node>:<Component>@<Id>\] - <Content>",
        lambda r: datetime.strptime(f"{r['Date']} {r['Time']}", "%Y-%m-%d %H:%M:%S,%f"),
    ),
    "Spark": (
        "<Date> <Time> <Level> <Component>: <Content>",
        lambda r: datetime.strptime(f"{r['Date']} {r['Time']}", "%y/%m/%d %H:%M:%S"),
    ),
    "BGL": (
        "<Label> <Timestamp> <Date> <Node> <Time> <NodeRepeat> <Type> <Component> <Level> <Content>",
        lambda r: datetime.fromtimestamp(int(r["Timestamp"]), tz=UTC).replace(tzinfo=None),
    ),
    "Proxifier": (
        r"\[<Time>\] <Program> - <Content>",
        lambda r: datetime.strptime(f"2000.{r['Time']}", "%Y.%m.%d %H:%M:%S"),
    ),
    "HealthApp": (
        r"<Time>\|<Component>\|<Pid>\|<Content>",
        lambda r: datetime.strptime(r["Time"][:17], "%Y%m%d-%H:%M:%S"),
    ),
}


# Drain's published grouping accuracy on the 2k files (logpai/logparser logparser/Drain/README.md)
DRAIN_2K = {"Zookeeper": 0.9665, "Spark": 0.92, "BGL": 0.9625, "Proxifier": 0.5265, "HealthApp": 0.78}


@pytest.mark.parametrize("name", sorted(OTHER_FORMATS))
def test_other_loghub_files_given_their_format(tmp_path: Path, name: str) -> None:
    fmt, time_of = OTHER_FORMATS[name]
    file = OTHER / f"{name}_300.log"
    report, rows = run(tmp_path, file, "--format", fmt, "--window", "600", "--lateness", "86400")
    truth = ground_truth(OTHER / f"{name}_300.log_structured.csv")
    assert report["lines"] == len(truth) == len(rows) == 300
    assert report["unparsed"] == 0 and report["late"] == 0  # a day of allowed lateness: nothing is too late
    # the windows are the 10-minute slots of the ground truth's times, with their line counts
    slots: dict[float, int] = {}
    for row in truth:
        at = time_of(row).replace(tzinfo=UTC).timestamp()
        slot = at - at % 600
        slots[slot] = slots.get(slot, 0) + 1
    assert {w["window_start_s"]: w["lines"] for w in report["windows"]} == slots
    if "Level" in truth[0]:
        levels: dict[str, int] = {}
        for row in truth:
            levels[row["Level"]] = levels.get(row["Level"], 0) + 1
        assert report["by_level"] == levels
    # templates: through the whole service, at least Drain's published accuracy on the 2k file
    accuracy = grouping_accuracy([r["template_id"] for r in rows], [r["EventId"] for r in truth])
    assert accuracy >= DRAIN_2K[name], accuracy


def test_without_lateness_out_of_order_lines_are_late_and_listed(tmp_path: Path) -> None:
    # Zookeeper's lines, shuffled: with 0 s of lateness some are too late for their 60 s window
    import random

    fmt, time_of = OTHER_FORMATS["Zookeeper"]
    lines = (OTHER / "Zookeeper_300.log").read_text(encoding="utf-8").splitlines()
    truth = ground_truth(OTHER / "Zookeeper_300.log_structured.csv")
    order = list(range(300))
    random.Random(7).shuffle(order)
    shuffled = tmp_path / "shuffled.log"
    shuffled.write_text("".join(lines[i] + "\n" for i in order), encoding="utf-8")
    report, _ = run(tmp_path, shuffled, "--format", fmt, "--window", "60")
    # independent count: a line is too late when its 60 s window ended at or before the latest
    # time seen before it (the watermark, with no lateness)
    latest = float("-inf")
    expected_late = []
    for n, i in enumerate(order, start=1):
        at = time_of(truth[i]).replace(tzinfo=UTC).timestamp()
        if at - at % 60 + 60 <= latest:
            expected_late.append(n)
        latest = max(latest, at)
    assert expected_late, "the shuffled sample should have out-of-order lines"
    assert report["late"] == len(expected_late)
    assert sorted(r["line_no"] for r in report["late_lines"]) == expected_late
    assert sum(w["lines"] for w in report["windows"]) + report["late"] == 300


def test_masks_and_sliding_windows(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    users = ["alice", "bob", "carol", "dave"]
    log.write_text(
        "".join(
            f"2024-01-01 00:{m:02d}:00 INFO session {m} opened for user {users[m % 4]} on tty{m % 3}\n"
            for m in range(20)
        )
    )
    report, rows = run(
        tmp_path,
        log,
        "--format",
        "<Date> <Time> <Level> <Content>",
        "--no-default-masks",
        "--mask",
        r"<USER>=(?<=user )\w+",
        "--mask",
        r"tty\d+",
        "--mask",
        r"(?<=session )\d+",
        "--window",
        "600",
        "--slide",
        "300",
    )
    assert [t["template"] for t in report["templates"]] == ["session <*> opened for user <USER> on <*>"]
    assert report["settings"]["miner"]["masks"] == [
        [r"(?<=user )\w+", "USER"],
        [r"tty\d+", "*"],
        [r"(?<=session )\d+", "*"],
    ]
    # 10-minute windows every 5 minutes over minutes 0..19: starts -5, 0, 5, 10, 15 (minutes)
    assert [(w["window_start_s"] - 1704067200) / 60 for w in report["windows"]] == [-5, 0, 5, 10, 15]
    assert [w["lines"] for w in report["windows"]] == [5, 10, 10, 10, 5]
    assert report["lines"] == 20 and len(rows) == 20


def test_miner_drain3_is_selectable_with_its_options(tmp_path: Path) -> None:
    report, rows = run(tmp_path, SHIPPED / "Apache_2k.log", "--format", "Apache", "--miner", "drain3", "--depth", "5")
    assert report["settings"]["miner"]["miner"] == "drain3" and report["settings"]["miner"]["depth"] == 5
    truth = [row["EventId"] for row in ground_truth(SHIPPED / "Apache_2k.log_structured.csv")]
    assert grouping_accuracy([r["template_id"] for r in rows], truth) == 1.0
    default, _ = run(tmp_path, SHIPPED / "Apache_2k.log", "--format", "Apache")
    assert default["settings"]["miner"] == {"miner": "logminer", "merge_values": 5, "masks": [], "default_masks": True}


def test_unparsed_lines_are_counted_and_assigned(tmp_path: Path) -> None:
    log = tmp_path / "mixed.log"
    log.write_text("2024-01-01 00:00:01 INFO a\nnot a log line\n2024-01-01 00:00:02 ERROR b\n\n")
    report, rows = run(tmp_path, log, "--format", "<Date> <Time> <Level> <Content>")
    assert (report["lines"], report["unparsed"], report["parsed"]) == (4, 2, 2)
    assert report["by_level"] == {"INFO": 1, "unknown": 2, "ERROR": 1}
    assert [r["line_no"] for r in rows] == ["1", "2", "3", "4"]


@pytest.mark.parametrize(
    "args,flag",
    [
        (["--format", "<Date> <Message>"], "--format"),
        (["--format", "Nginx"], "--format"),
        (["--format", "HDFS", "--mask", "(unclosed"], "--mask"),
        (["--format", "HDFS", "--mask", "x*"], "--mask"),
        (["--format", "HDFS", "--mask", "<ID>="], "--mask"),  # a name and no regex
        (["--format", "HDFS", "--mask", "<>=abc"], "--mask"),  # an empty name
        (["--format", "HDFS", "--mask", "<a b>=abc"], "--mask"),  # a name that is not one
        (["--format", "HDFS", "--window", "60", "--slide", "120"], "--slide"),
        (["--format", "HDFS", "--window", "0"], "--window"),
        (["--format", "HDFS", "--lateness", "-1"], "--lateness"),
        (["--format", "HDFS", "--depth", "5"], "--depth"),  # drain3's option without --miner drain3
        (["--format", "HDFS", "--sim-th", "0.5"], "--sim-th"),
        (["--format", "HDFS", "--miner", "drain3", "--depth", "2"], "--depth"),
        (["--format", "HDFS", "--miner", "drain3", "--sim-th", "1.5"], "--sim-th"),
        (["--format", "HDFS", "--level-field", "Nope"], "--level-field"),
        (["--format", "HDFS", "--error-rate", "2"], "--error-rate"),
        (["--format", "HDFS", "--mask", r"\b"], "--mask"),  # matches only zero-width
        (["--format", "HDFS", "--mask", "(?=a)"], "--mask"),
        (["--format", "HDFS", "--mask", "a{99999999999}"], "--mask"),  # too large a repeat
        (["--format", r"<Date>\d{99999999999} <Content>"], "--format"),
        (["--format", "HDFS", "--time-format", "%Q"], "--time-format"),
        (["--format", "HDFS", "--year", "0"], "--year"),
        (["--format", "HDFS", "--window", "3600", "--slide", "1"], "--slide"),  # 3600 windows per line
        (["--format", "HDFS", "--window", "1e12"], "--window"),
        (["--format", "HDFS", "--max-children", "5"], "--max-children"),
        (["--format", "HDFS", "--name", " "], "--name"),
        (["--format", "HDFS", "--top", "-1"], "--top"),
    ],
)
def test_bad_configuration_fails_at_start_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], flag: str
) -> None:
    report = tmp_path / "r.json"
    assert main(["logs", "analyze", str(SHIPPED / "HDFS_2k.log"), *args, "--quiet", "--report", str(report)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: bad configuration: {flag}: "), line  # the flag typed, not the setting
    assert not report.exists() or report.stat().st_size == 0


def test_the_report_may_not_overwrite_the_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "a.log"
    log.write_text("2024-01-01 00:00:01 INFO a\n")
    assert (
        main(
            [
                "logs",
                "analyze",
                str(log),
                "--format",
                "<Date> <Time> <Level> <Content>",
                "--quiet",
                "--report",
                str(log),
            ]
        )
        == 2
    )
    assert "report" in capsys.readouterr().err and log.read_text() == "2024-01-01 00:00:01 INFO a\n"


@pytest.mark.parametrize("option", ["--report", "--assignments"])
@pytest.mark.parametrize("where", ["missing folder", "trailing slash, missing", "trailing slash, exists", "folder"])
def test_an_output_path_in_a_missing_folder_or_naming_a_folder_fails_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, where: str
) -> None:
    (tmp_path / "out").mkdir()
    given = {
        "missing folder": str(tmp_path / "nonexistent" / "dir" / "x.json"),
        "trailing slash, missing": str(tmp_path / "new") + "/",
        "trailing slash, exists": str(tmp_path / "out") + "/",
        "folder": str(tmp_path / "out"),
    }[where]
    assert main(["logs", "analyze", str(SHIPPED / "HDFS_2k.log"), "--format", "HDFS", "--quiet", option, given]) == 2
    out, err = capsys.readouterr()
    [line] = err.strip().splitlines()
    assert line.startswith("error: bad configuration: ") and given in line, line
    assert ("folder" in line) and out == ""  # nothing analysed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and not any((tmp_path / "out").iterdir())


def test_a_garbage_first_line_does_not_make_the_file_late(tmp_path: Path) -> None:
    log = tmp_path / "banner.log"
    log.write_text("=== banner ===\n" + (SHIPPED / "HDFS_2k.log").read_text(encoding="utf-8"))
    with_banner, _ = run(tmp_path, log, "--format", "HDFS")
    (tmp_path / "plain").mkdir()
    plain, _ = run(tmp_path / "plain", SHIPPED / "HDFS_2k.log", "--format", "HDFS")
    assert (with_banner["lines"], with_banner["unparsed"], with_banner["late"]) == (2001, 1, 0)
    assert len(with_banner["windows"]) == len(plain["windows"])
    assert sum(w["lines"] for w in with_banner["windows"]) == 2001


def test_a_very_long_line_is_cut_and_counted(tmp_path: Path) -> None:
    from reactive_services.logs import MAX_LINE_CHARS

    log = tmp_path / "long.log"
    log.write_text(f"2024-01-01 00:00:01 INFO {'x' * (MAX_LINE_CHARS + 10)}\n2024-01-01 00:00:02 INFO ok\n")
    report, rows = run(tmp_path, log, "--format", "<Date> <Time> <Level> <Content>")
    assert (report["lines"], report["truncated"], report["unparsed"], len(rows)) == (2, 1, 0, 2)


def test_missing_file_fails_at_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["logs", "analyze", str(tmp_path / "nope.log"), "--format", "HDFS", "--quiet"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_the_console_script(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "reactive_services.cli",
            "logs",
            "analyze",
            str(SHIPPED / "OpenSSH_2k.log"),
            "--format",
            "openssh",
            "--report",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "2000" in proc.stdout and json.loads(out.read_text())["lines"] == 2000


def test_a_line_without_a_time_after_a_line_from_the_past_takes_the_latest_time(tmp_path: Path) -> None:
    # line 4 is out of order (too late for its closed window); line 5 has no time: it takes the
    # source's latest time (10:01:05), not line 4's, so it is counted in a window, not late
    log = tmp_path / "late.log"
    log.write_text(
        "2024-01-02 10:00:01 [INFO] user u1 logged in\n"
        "2024-01-02 10:00:30 [ERROR] db down\n"
        "2024-01-02 10:01:05 [INFO] user u2 logged in\n"
        "2024-01-02 10:00:10 [INFO] user u3 logged in\n"
        "not a log line\n"
        "2024-01-02 10:02:30 [INFO] user u4 logged in\n"
    )
    report = tmp_path / "r.json"
    fmt = r"<Date> <Time> \[<Level>\] <Content>"
    assert (
        main(["logs", "analyze", str(log), "--format", fmt, "--window", "60", "--quiet", "--report", str(report)]) == 0
    )
    r = json.loads(report.read_text())
    assert (r["lines"], r["unparsed"], r["late"]) == (6, 1, 1)
    assert [line["line_no"] for line in r["late_lines"]] == [4]
    assert sum(w["unparsed"] for w in r["windows"]) == 1  # the windows count it, as the report does
    assert sum(w["lines"] for w in r["windows"]) + r["late"] == r["lines"]
