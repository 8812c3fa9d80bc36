"""The log-analytics pipeline under the crash checker: every line reaches a published window (at-least-once)."""

from __future__ import annotations

from typing import Any

from reactive_services.examples.shop.log_sources import SOURCES, default_files
from reactive_services.logs import WindowReport, build_pipeline, read_lines
from reactive_services.testing import check_at_least_once


def lines_of(report: WindowReport) -> list[dict[str, Any]]:
    return [
        {"source": e.source, "line_no": e.line_no, "line": e.line} for e in (*report.window.items, *report.window.late)
    ]


async def test_every_line_reaches_a_window_whatever_the_crash_points() -> None:
    files = default_files()
    records = [
        {"source": name, "line_no": n, "line": line}
        for name in ("Apache", "HDFS")
        for n, line in enumerate(read_lines(files[name])[:250], start=1)
    ]
    report = await check_at_least_once(
        lambda messages: build_pipeline(messages, sources=SOURCES),
        records,
        inputs_of=lines_of,
        key=lambda r: r["source"],
        partitions=2,
        crash_every=60,
        random_scenarios=3,
    )
    report.assert_ok()
    assert sum(len(crashes) for crashes in report.scenarios.values()) >= 8
