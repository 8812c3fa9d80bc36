"""The log analytics per fetch: ``build_pipeline(batches=True)`` and ``LogsController`` on ``source_batches``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import reactivex

from reactive_services import Microservice
from reactive_services.adapters import DeadLetterSink, Message
from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.errors import ValidationError
from reactive_services.examples.shop.log_sources import SOURCES, default_files
from reactive_services.logs import (
    LogAnalyticsService,
    LogsController,
    LogSource,
    WindowReport,
    build_pipeline,
    read_lines,
    replay_logs,
)

ZK_FORMAT = "<Date> <Time> <Level> <Content>"
T0 = 1704067200.0  # 2024-01-01T00:00:00Z


def zk(second: int, text: str = "tick", level: str = "INFO") -> str:
    return f"2024-01-01 {second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d} {level} {text}"


def zk_sources() -> dict[str, LogSource]:
    return {"Z": LogSource(name="Z", format=ZK_FORMAT, component_field=None, window_s=60.0)}


async def consume_batches(broker: InMemoryBroker, expected: int, **options: Any) -> list[WindowReport]:
    """build_pipeline(batches=True) over the broker's ``logs`` batches, until ``expected`` lines and the end."""
    stop = asyncio.Event()
    seen = 0

    def counted(_event: Any) -> None:
        nonlocal seen
        seen += 1
        if seen == expected:
            stop.set()

    reports: list[WindowReport] = []
    errors: list[Exception] = []
    done = asyncio.Event()
    batches = broker.source_batches("logs", group_id="batches", stop=stop)
    build_pipeline(batches, batches=True, on_event=counted, **options).subscribe(
        reports.append, lambda e: (errors.append(e), done.set()), done.set
    )
    await asyncio.wait_for(done.wait(), timeout=30)
    assert errors == []
    return reports


async def test_batches_give_the_windows_and_alerts_of_the_per_record_pipeline() -> None:
    files = default_files()
    messages = []
    for name, path in files.items():
        for n, line in enumerate(read_lines(path), start=1):
            messages.append(
                Message("logs", 0, len(messages), name.encode(), {"source": name, "line_no": n, "line": line})
            )
    per_record: list[WindowReport] = []
    build_pipeline(reactivex.from_iterable(messages), sources=SOURCES).subscribe(per_record.append)

    broker = InMemoryBroker(max_batch=300)  # several batches per source, split across windows
    await broker.start()
    try:
        counts = await replay_logs(broker, files, formats=SOURCES)
        batched = await consume_batches(broker, sum(counts.values()), sources=SOURCES)
    finally:
        await broker.stop()

    def by_source(reports: list[WindowReport]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for report in reports:
            out.setdefault(report.stats["source"], []).append((report.stats, report.alerts))
        return out

    assert by_source(batched) == by_source(per_record)
    lines = {
        name: sum(r.stats["lines"] + r.stats["late"] for r in batched if r.stats["source"] == name) for name in files
    }
    assert lines == {name: 2000 for name in files}


async def test_a_batch_is_committed_only_once_every_window_holding_its_lines_is_published() -> None:
    broker = InMemoryBroker(max_batch=4)
    await broker.start()
    gate = asyncio.Event()
    published: list[tuple[str, Any]] = []

    async def slow_emit(topic: str, value: Any, *, key: str | None = None) -> None:
        await gate.wait()
        published.append((topic, value))
        await broker.emit(topic, value, key=key)

    try:
        # 4 lines per batch: [0, 60) gets lines 1-3, line 4 opens [60, 120) and closes [0, 60);
        # batch 2: line 6 opens [120, 180) and closes [60, 120)
        seconds = [1, 2, 3, 61, 62, 121]
        for n, second in enumerate(seconds, start=1):
            await broker.emit("logs", {"source": "Z", "line_no": n, "line": zk(second)}, key="Z")
        partition = broker.records("logs")[0].partition  # the key's partition
        analytics = LogAnalyticsService(slow_emit)
        service = Microservice(broker, [LogsController(analytics, sources=zk_sources())], name="la", group_id="g")
        await service.start()
        for _ in range(200):
            if analytics.report().get("Z", {}).get("lines") == len(seconds):
                break
            await asyncio.sleep(0.01)
        assert analytics.report()["Z"]["lines"] == len(seconds)
        await asyncio.sleep(0.1)
        # [0, 60) was emitted but its stats are not acknowledged: nothing is committed
        assert await broker.committed("g", "logs", partition) in (None, 0)
        gate.set()
        # batch 1 (lines 1-4) is in [0, 60) and [60, 120), both closed by line 6 and now
        # published: it commits; batch 2 (lines 5, 6) also holds [120, 180), still open
        for _ in range(300):
            if await broker.committed("g", "logs", partition) == 4:
                break
            await asyncio.sleep(0.01)
        assert await broker.committed("g", "logs", partition) == 4
        await asyncio.sleep(0.1)
        assert await broker.committed("g", "logs", partition) == 4
        await service.stop()  # the end: the open windows are published, then everything commits
        await analytics.flush()
        assert await broker.committed("g", "logs", partition) == len(seconds)
        assert [v["window_start_s"] - T0 for t, v in published if t == "log.stats"] == [0.0, 60.0, 120.0]
    finally:
        await broker.stop()


async def test_a_bad_record_without_a_dead_letter_sink_ends_the_batch_stream() -> None:
    broker = InMemoryBroker()
    await broker.start()
    try:
        await broker.emit("logs", {"source": "Z", "line_no": 1, "line": zk(1)}, key="Z")
        await broker.emit("logs", {"source": "Z", "line_no": 0, "line": zk(2)}, key="Z")
        partition = broker.records("logs")[0].partition
        errors: list[Exception] = []
        done = asyncio.Event()
        batches = broker.source_batches("logs", group_id="g")
        build_pipeline(batches, batches=True, sources=zk_sources()).subscribe(
            None, lambda e: (errors.append(e), done.set()), done.set
        )
        await asyncio.wait_for(done.wait(), timeout=10)
        assert len(errors) == 1 and isinstance(errors[0], ValidationError)
        assert "line_no" in str(errors[0])
        assert await broker.committed("g", "logs", partition) in (None, 0)  # the batch stays uncommitted
    finally:
        await broker.stop()


async def test_the_controller_dead_letters_a_record_of_the_wrong_shape_inside_a_batch() -> None:
    broker = InMemoryBroker()
    await broker.start()
    try:
        values: list[Any] = [
            {"source": "Z", "line_no": 1, "line": zk(1)},
            {"source": "", "line_no": 2, "line": zk(2)},  # an empty source name is not a name
            {"source": "Z", "line_no": True, "line": zk(3)},  # a boolean is not a line number
            {"source": "Z", "line_no": 4, "line": zk(4), "truncated_from": 70000},
        ]
        for value in values:
            await broker.emit("logs", value, key="Z")
        analytics = LogAnalyticsService(broker.emit)
        controller = LogsController(analytics, DeadLetterSink(broker), sources=zk_sources())
        service = Microservice(broker, [controller], name="la")
        await service.start()
        for _ in range(200):
            if controller.received == len(values):
                break
            await asyncio.sleep(0.01)
        await service.stop()
        await analytics.flush()
        assert analytics.report()["Z"]["lines"] == 2
        assert len(broker.records("logs.DLT")) == 2
    finally:
        await broker.stop()


@pytest.mark.parametrize("count", [1, 7])
async def test_lines_come_out_in_windows_whatever_the_batch_size(count: int) -> None:
    broker = InMemoryBroker(max_batch=count)
    await broker.start()
    try:
        for n in range(1, 31):
            await broker.emit("logs", {"source": "Z", "line_no": n, "line": zk(n * 10)}, key="Z")
        reports = await consume_batches(broker, 30, sources=zk_sources())
    finally:
        await broker.stop()
    assert [(r.stats["window_start_s"] - T0, r.stats["lines"]) for r in reports] == [
        (0.0, 5),
        (60.0, 6),
        (120.0, 6),
        (180.0, 6),
        (240.0, 6),
        (300.0, 1),
    ]


async def test_on_events_gets_each_batch_once_in_arrival_order() -> None:
    lines = [zk(s, f"tick {s}") for s in range(0, 300, 7)]
    broker = InMemoryBroker(max_batch=10)  # 43 lines: 5 batches
    await broker.start()
    try:
        for n, line in enumerate(lines, start=1):
            await broker.emit("logs", {"source": "Z", "line_no": n, "line": line}, key="Z")
        one_by_one: list[Any] = []
        lists: list[list[Any]] = []
        stop = asyncio.Event()

        def counted(events: list[Any]) -> None:
            lists.append(list(events))
            if sum(map(len, lists)) == len(lines):
                stop.set()

        done = asyncio.Event()
        build_pipeline(
            broker.source_batches("logs", group_id="g", stop=stop),
            batches=True,
            sources=zk_sources(),
            on_event=one_by_one.append,
            on_events=counted,
        ).subscribe(lambda _r: None, lambda _e: done.set(), done.set)
        await asyncio.wait_for(done.wait(), timeout=30)
    finally:
        await broker.stop()
    assert [len(events) for events in lists] == [10, 10, 10, 10, 3]
    assert [event for events in lists for event in events] == one_by_one
    assert [event.line_no for event in one_by_one] == list(range(1, len(lines) + 1))


def test_on_events_without_batches_gets_lists_of_one() -> None:
    lines = [zk(s) for s in (0, 30, 90)]
    messages = [Message("logs", 0, i, b"Z", {"source": "Z", "line": line}) for i, line in enumerate(lines)]
    lists: list[list[Any]] = []
    build_pipeline(reactivex.from_iterable(messages), sources=zk_sources(), on_events=lists.append).subscribe()
    assert [[event.line_no for event in events] for events in lists] == [[1], [2], [3]]
