"""Smoke tests of bench/tracing_cost.py and bench/request_latency.py: each runs end to end on a
tiny input and prints a row per contender. Only the output's shape is checked, never a speed."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120)


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_tracing_cost_prints_off_on_and_sampled(capsys: pytest.CaptureFixture[str]) -> None:
    assert await _load("tracing_cost").main(["--records", "200", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^  tracing (off|on).*?([\d,]+) records/s\s+([\d.]+)$", out, re.M)
    assert [r[0] for r in rows] == ["off", "on", "on"], out
    assert rows[0][2] == "1.00"


async def test_request_latency_prints_grpc_and_the_broker(capsys: pytest.CaptureFixture[str]) -> None:
    assert await _load("request_latency").main(["--requests", "50", "--concurrency", "4", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^  (grpc|memory)\s+p50\s+[\d.]+ ms\s+p99\s+[\d.]+ ms\s+[\d,]+ requests/s$", out, re.M)
    assert rows == ["grpc", "memory"], out
