"""The log-analytics pipeline under the crash checker: every line reaches a published window (at-least-once)."""

from __future__ import annotations

import asyncio
from typing import Any

from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.examples.shop.log_sources import SOURCES, default_files
from reactive_services.logs import WindowReport, build_pipeline, read_lines
from reactive_services.operators import ChangelogStore
from reactive_services.testing import check_at_least_once, wait_for


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


async def test_a_quiet_source_has_its_last_window_published_after_the_idle_timeout() -> None:
    # the shipped Apache lines, then nothing: without an idle timeout the newest window waits for
    # a newer line or the stop; with one it is published (and its lines committed) meanwhile
    files = default_files()
    lines = read_lines(files["Apache"])[:300]
    async with InMemoryBroker(partitions=1) as broker:
        await broker.emit_batch(
            "logs", [("Apache", {"source": "Apache", "line_no": n, "line": line}) for n, line in enumerate(lines, 1)]
        )
        reports: list[WindowReport] = []
        stop = asyncio.Event()
        done = asyncio.Event()
        build_pipeline(broker.source("logs", group_id="g", stop=stop), sources=SOURCES, idle_timeout_s=0.3).subscribe(
            reports.append, on_completed=done.set
        )

        async def all_committed() -> bool:
            return await broker.committed("g", "logs", 0) == len(lines)

        await wait_for(all_committed, timeout=10, what="every line committed before the stop")
        assert sum(len(r.window.items) for r in reports) == len(lines)
        stop.set()
        await asyncio.wait_for(done.wait(), 10)
        assert sum(len(r.window.items) for r in reports) == len(lines)  # nothing more at the stop


async def test_with_a_checkpoint_every_line_is_counted_once_in_the_final_windows() -> None:
    # Apache and HDFS on one partition, their lines interleaved: a crash replays lines of windows
    # already published; the checkpoint makes the replay skip them (effectively once per window)
    files = default_files()
    apache, hdfs = read_lines(files["Apache"])[:200], read_lines(files["HDFS"])[:200]
    records = [
        record
        for n in range(200)
        for record in (
            {"source": "Apache", "line_no": n + 1, "line": apache[n]},
            {"source": "HDFS", "line_no": n + 1, "line": hdfs[n]},
        )
    ]
    report = await check_at_least_once(
        lambda messages, broker: build_pipeline(
            messages, sources=SOURCES, checkpoint=ChangelogStore(broker, "log-analytics.windows")
        ),
        records,
        inputs_of=lines_of,
        output_id=lambda r: (r.window.key, r.window.start),
        crash_every=37,
        random_scenarios=3,
    )
    report.assert_ok()
