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


async def test_per_fetch_with_a_checkpoint_lines_count_once_and_template_ids_survive_the_crashes() -> None:
    # the service's way (batches of 16 lines): the windows as above, and the miners' states in
    # the changelog, so that after a crash a template keeps its id: every line ends in the same
    # group (its id through the miner's merges) as without a crash
    files = default_files()
    apache, linux = read_lines(files["Apache"])[:200], read_lines(files["Linux"])[:200]
    records = [
        record
        for n in range(200)
        for record in (
            {"source": "Apache", "line_no": n + 1, "line": apache[n]},
            {"source": "Linux", "line_no": n + 1, "line": linux[n]},
        )
    ]
    # per scenario (one broker each), its runs: (the line -> template id it got, the parsers)
    scenarios: dict[int, list[tuple[dict[tuple[str, int], int], list[Any]]]] = {}

    def pipeline(batches: Any, broker: Any) -> Any:
        assigned: dict[tuple[str, int], int] = {}
        parsers: list[Any] = []
        scenarios.setdefault(id(broker), []).append((assigned, parsers))

        def record(event: Any) -> None:
            assigned[(event.source, event.line_no)] = event.template_id

        return build_pipeline(
            batches,
            batches=True,
            sources=SOURCES,
            checkpoint=ChangelogStore(broker, "log-analytics.windows"),
            on_event=record,
            on_parsers=parsers.append,
        )

    report = await check_at_least_once(
        pipeline,
        records,
        inputs_of=lines_of,
        output_id=lambda r: (r.window.key, r.window.start),
        crash_every=37,
        random_scenarios=2,
        batch_size=16,
    )
    report.assert_ok()
    assert sum(len(crashes) for crashes in report.scenarios.values()) >= 8

    def final_groups(runs: list[tuple[dict[tuple[str, int], int], list[Any]]]) -> dict[tuple[str, int], int]:
        latest: dict[tuple[str, int], int] = {}
        for assigned, _ in runs:  # a line parsed again after a crash: its latest id
            latest.update(assigned)
        last = runs[-1][1][0]
        return {line: last.parser(line[0]).miner.resolve(tid) for line, tid in latest.items()}

    baseline, *crashed = scenarios.values()
    assert len(baseline) == 1 and len(crashed) == 3 and all(len(runs) > 1 for runs in crashed)
    expected = final_groups(baseline)
    assert len(expected) == len(records)
    for runs in crashed:
        assert final_groups(runs) == expected
