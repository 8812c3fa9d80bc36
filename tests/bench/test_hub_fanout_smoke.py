"""Smoke test of bench/hub_fanout.py: the four fan-out phases and a reconnect storm on the
in-memory broker at 20 clients, end to end (a child process is the load generator). Only the
shape of the result and its exactness are checked (nothing missed, nothing twice), never a speed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(180)


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_hub_fanout", ROOT / "bench" / "hub_fanout.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_hub_fanout_phases_and_a_reconnect_storm_at_20_clients(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _load()
    result = bench.main(
        ["--clients", "20", "--rounds", "2", "--events", "30", "--rate", "50", "--missed", "15", "--max-readers", "4"]
    )
    out = capsys.readouterr().out
    assert "hub fan-out: 20 clients" in out and "reconnect storm" in out, out
    (fanout,) = result["fanout"]
    assert [p["mode"] for p in fanout["phases"]] == ["hub", "broadcast", "broadcast", "hub"]
    for phase in fanout["phases"]:
        assert phase["missing"] == 0 and phase["out_of_order"] == 0, phase
    (storm,) = result["storm"]
    assert len(storm["rounds"]) == 2
    for r in storm["rounds"]:
        assert r["caught_up"] == 20 and r["connect_errors"] == 0, r
        assert r["missed_total"] == 0 and r["duplicates_total"] == 0, r
        assert r["recovery_failed"] == 0 and r["resumed"] == 20, r
        # every cursor is recent: all of them from the in-memory history, no catch-up reader
        assert r["resumed_from_history"] == 20 and r["readers_opened"] == 0, r


def test_a_reconnect_storm_read_from_the_log(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _load()
    args = ["--clients", "20", "--rounds", "1", "--rate", "50", "--missed", "15", "--max-readers", "4"]
    result = bench.main([*args, "--only", "storm", "--history", "0"])
    assert "reconnect storm" in capsys.readouterr().out
    ((r,),) = [storm["rounds"] for storm in result["storm"]]
    assert r["caught_up"] == 20 and r["missed_total"] == 0 and r["duplicates_total"] == 0, r
    assert r["recovery_failed"] == 0 and r["resumed"] == 20 and r["resumed_from_history"] == 0, r
    assert r["readers_opened"] == 20 and r["peak_readers"] <= 4 + 1, r  # + the live feed's reader
    assert r["records"] >= 20 * 15, r
