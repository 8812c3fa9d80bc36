"""Smoke test of bench/log_throughput.py: it runs end to end on tiny inputs and prints/writes its figures.

Only the shape of the output is checked, never a speed (speed targets are read from the bench's
printed ratios, not asserted). It fails when the bench no longer runs against the shop's
log-analytics code, or when its own checks fail: drain3 alone no longer mines the same templates
as the pipeline's parser, or the pipeline (or the service) loses lines.
"""

from __future__ import annotations

import importlib.util
import json
import math
import statistics
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--lines", "60", "--repeat", "1", "--rounds", "1"]


def _bench() -> ModuleType:
    name = "bench_log_throughput"
    if name not in sys.modules:  # registered first: its dataclasses look their module up there
        spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / "log_throughput.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _rate(value: object) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_shipped_samples_with_service_and_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "figures.json"
    assert _bench().main([*TINY, "--service", "--profile", "5", "--json", str(out)]) == 0

    payload = json.loads(out.read_text(encoding="utf-8"))
    assert [d["dataset"] for d in payload["datasets"]] == ["Apache", "HDFS", "Linux", "OpenSSH"]
    for d in payload["datasets"]:
        assert d["lines"] == 60
        assert d["passes"] == {"drain3": 1, "miner": 1, "pipeline": 1, "service": 1, "analyze_file": 1}
        for key in ("drain3_lines_per_s", "pipeline_lines_per_s", "service_lines_per_s", "analyze_file_lines_per_s"):
            assert _rate(d[key]), (d["dataset"], key, d[key])
        # each ratio: the median over the rounds of the kind's rate / the drain3 rates around it
        for ratio, rounds in (
            ("miner_ratio", "miner_round_ratios"),
            ("ratio", "round_ratios"),
            ("service_ratio", "service_round_ratios"),
            ("analyze_file_ratio", "analyze_file_round_ratios"),
        ):
            assert _rate(d[ratio]) and d[ratio] == pytest.approx(statistics.median(d[rounds])), (ratio, d)
        assert len(d["rounds"]) == len(d["round_ratios"]) == 1
    summary = payload["summary"]
    assert summary["datasets"] == 4 and _rate(summary["service_ratio_geomean"])
    assert _rate(summary["analyze_file_ratio_geomean"])
    profile = payload["profile"]
    assert profile["lines"] == 240 and 0 < profile["drain3_s"] < profile["total_s"]
    assert 1 <= len(profile["top"]) <= 5 and len(profile["stages_us_per_line"]) == 4

    printed = capsys.readouterr().out
    for text in (
        "drain3 alone lines/s",
        "miner alone lines/s",
        "miner/drain3",
        "pipeline/drain3",
        "service/drain3",
        "analyze_file/drain3",
        "summary: the miner alone runs at",
        "the pipeline runs at",
        "stage breakdown",
        "outside drain3, top functions",
    ):
        assert text in printed


def test_own_file_and_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sample = ROOT / "examples" / "shop" / "data" / "loghub" / "HDFS_2k.log"
    log = tmp_path / "dfs.log"
    log.write_bytes(sample.read_bytes())
    out = tmp_path / "figures.json"
    code = _bench().main(
        [
            *TINY,
            "--file",
            str(log),
            "--format",
            "<Date> <Time> <Pid> <Level> <Component>: <Content>",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    (d,) = json.loads(out.read_text(encoding="utf-8"))["datasets"]
    assert (d["dataset"], d["source"], d["lines"]) == ("dfs.log", "log", 60)
    assert "service_lines_per_s" not in d and _rate(d["ratio"])
    assert "dfs.log" in capsys.readouterr().out


def test_missing_file_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _bench().main(["--file", str(tmp_path / "nope.log"), "--format", "HDFS"]) == 2
    assert capsys.readouterr().err.startswith("error: missing file")
