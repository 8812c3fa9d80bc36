"""reactive_services.logs: the pipeline (virtual time and shipped data), the service, replay."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import reactivex
from reactivex import operators as ops
from reactivex.testing import ReactiveTest, TestScheduler

from reactive_services.adapters import Message, headers_to_dict
from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.errors import ConfigError, PublishError, ValidationError
from reactive_services.examples.shop.log_sources import DATA_DIR, SOURCES, default_files
from reactive_services.logs import (
    LOG_RECORD,
    LogAnalyticsService,
    LogRecord,
    WindowReport,
    build_pipeline,
    check_log_record,
    read_lines,
    replay_logs,
)

on_next = ReactiveTest.on_next
on_completed = ReactiveTest.on_completed

APACHE_LEVEL = re.compile(r"^\[[^\]]*\] \[([a-z]+)\]")
#: the shipped sources with hourly windows (the marble tests below were written for them; the
#: default window is 10 minutes)
HOURLY = {name: dataclasses.replace(source, window_s=3600.0) for name, source in SOURCES.items()}


def raw_lines(name: str) -> list[str]:
    with open(DATA_DIR / f"{name}_2k.log", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def msg(source: str, line_no: int, line: str, *, offset: int | None = None, timestamp_ms: int = 0) -> Message:
    return Message(
        topic="logs",
        partition=0,
        offset=line_no - 1 if offset is None else offset,
        key=source.encode(),
        value={"source": source, "line_no": line_no, "line": line},
        timestamp_ms=timestamp_ms,
    )


def shipped_messages() -> list[Message]:
    out = []
    offset = 0
    for name, path in default_files().items():
        for n, line in enumerate(read_lines(path), start=1):
            out.append(msg(name, n, line, offset=offset))
            offset += 1
    return out


def collect(observable: reactivex.Observable[Any]) -> tuple[list[Any], list[Exception], list[bool]]:
    items: list[Any] = []
    errors: list[Exception] = []
    done: list[bool] = []
    observable.subscribe(items.append, errors.append, lambda: done.append(True))
    return items, errors, done


def apache(hh_mm_ss: str, level: str, text: str) -> str:
    return f"[Sun Dec 04 {hh_mm_ss} 2005] [{level}] {text}"


# -- the pipeline in virtual time ------------------------------------------------------------


def test_pipeline_marble_windows_close_on_event_time() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(
        on_next(210, msg("Apache", 1, apache("04:10:00", "notice", "a"))),
        on_next(220, msg("Apache", 2, apache("04:50:00", "error", "b"))),
        on_next(230, msg("HDFS", 1, "081109 203615 148 INFO dfs.DataNode: x")),
        on_next(240, msg("Apache", 3, apache("05:01:00", "notice", "c"))),  # closes Apache 04:00-05:00
        on_next(250, msg("HDFS", 2, "081109 213615 149 WARN dfs.DataNode: y")),  # closes HDFS 20:00-21:00
        on_completed(300),
    )
    result = scheduler.start(lambda: build_pipeline(source, sources=HOURLY))
    got = [(m.time, m.value.kind) for m in result.messages]
    assert got == [(240, "N"), (250, "N"), (300, "N"), (300, "N"), (300, "C")]
    reports = [m.value.value for m in result.messages if m.value.kind == "N"]
    summary = [(r.stats["source"], r.stats["window_start"], r.stats["lines"], r.stats["by_level"]) for r in reports]
    assert summary == [
        ("Apache", "2005-12-04T04:00:00Z", 2, {"notice": 1, "error": 1}),
        ("HDFS", "2008-11-09T20:00:00Z", 1, {"INFO": 1}),
        ("Apache", "2005-12-04T05:00:00Z", 1, {"notice": 1}),
        ("HDFS", "2008-11-09T21:00:00Z", 1, {"WARN": 1}),
    ]
    assert all(isinstance(r, WindowReport) and r.alerts == () for r in reports)  # fewer than 10 lines


def test_pipeline_alert_fires_in_a_window_with_many_errors() -> None:
    # 5 errors of 10 lines in one 10-minute window: the default rules' floors (min_errors 5, min_lines 10)
    lines = [apache(f"04:{i:02d}:00", "error" if i < 5 else "notice", f"line {i}") for i in range(10)]
    reports, errors, done = collect(
        build_pipeline(
            reactivex.from_iterable([msg("Apache", n, line) for n, line in enumerate(lines, start=1)]), sources=SOURCES
        )
    )
    assert errors == [] and done == [True]
    assert len(reports) == 1
    [alert] = reports[0].alerts
    assert alert["kind"] == "error_rate" and alert["source"] == "Apache"
    evidence = alert["evidence"]
    assert evidence["errors"] == 5 and evidence["lines"] == 10 and evidence["error_rate"] == 0.5
    assert evidence["baseline_errors"] is None  # the first window: no baseline yet
    assert alert["sample"] == lines[:3]


def test_unparseable_line_is_counted_not_dropped() -> None:
    messages = [
        msg("Apache", 1, apache("04:10:00", "notice", "a")),
        msg("Apache", 2, "garbage that matches no format"),
        msg("Apache", 3, apache("04:20:00", "error", "b")),
    ]
    reports, errors, _ = collect(build_pipeline(reactivex.from_iterable(messages), sources=HOURLY))
    assert errors == []
    assert [r.stats["lines"] for r in reports] == [3]
    assert reports[0].stats["unparsed"] == 1
    assert reports[0].stats["by_level"] == {"notice": 1, "unknown": 1, "error": 1}


def test_unknown_source_lines_are_unparsed_with_the_record_time() -> None:
    messages = [msg("Nginx", 1, "GET /", timestamp_ms=7_200_500), msg("Nginx", 2, "GET /x", timestamp_ms=7_300_000)]
    reports, errors, _ = collect(build_pipeline(reactivex.from_iterable(messages), sources=SOURCES))
    assert errors == []
    assert [(r.stats["source"], r.stats["lines"], r.stats["unparsed"], r.stats["window_start_s"]) for r in reports] == [
        ("Nginx", 2, 2, 7200.0)
    ]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "(root): Input should be a valid dictionary (got None)"),
        ("a line", "(root): Input should be a valid dictionary (got 'a line')"),
        ({"source": "Apache"}, "line: Field required (got {'source': 'Apache'})"),
        ({"source": "Apache", "line": 3}, "line: Input should be a valid string (got 3)"),
    ],
)
def test_malformed_record_ends_the_stream_with_validation_error(value: Any, reason: str) -> None:
    bad = Message(topic="logs", partition=0, offset=5, key=b"Apache", value=value)
    reports, errors, done = collect(build_pipeline(reactivex.of(bad), sources=SOURCES))
    assert reports == [] and done == []
    assert len(errors) == 1 and isinstance(errors[0], ValidationError)
    assert str(errors[0]) == f"invalid logs record: {reason}"


@pytest.mark.parametrize(
    ("value", "fields", "reason"),
    [
        ({"line": 5}, ("line",), "line: Input should be a valid string (got 5)"),
        ({"line": "x", "line_no": "two"}, ("line_no",), "line_no: Input should be a valid integer (got 'two')"),
        ({"line": "x", "line_no": True}, ("line_no",), "line_no: Input should be a valid integer (got True)"),
        ({"line": "x", "line_no": 2.0}, ("line_no",), "line_no: Input should be a valid integer (got 2.0)"),
        ({"line": "x", "line_no": 0}, ("line_no",), "line_no: Input should be greater than or equal to 1 (got 0)"),
        ({"line": "x", "source": ""}, ("source",), "source: String should have at least 1 character (got '')"),
        ({"line": "x", "source": None}, ("source",), "source: Input should be a valid string (got None)"),
        ({"line": "x", "truncated_from": "9"}, ("truncated_from",), "truncated_from: Input should be a valid "),
        ([{"line": "x"}], ("(root)",), "(root): Input should be a valid dictionary"),
        ({"line_no": -1}, ("line", "line_no"), "line: Field required (got {'line_no': -1}); line_no: Input should"),
    ],
)
def test_check_log_record_names_the_failing_fields(value: Any, fields: tuple[str, ...], reason: str) -> None:
    with pytest.raises(ValidationError) as caught:
        check_log_record(value)
    assert str(caught.value).startswith(f"invalid logs record: {reason}")
    assert caught.value.fields == fields


def test_check_log_record_returns_a_valid_record_unchanged() -> None:
    full: LogRecord = {"source": "Apache", "line_no": 3, "line": "x" * 10, "truncated_from": 70_000}
    assert check_log_record(full) is full
    minimal = {"line": "", "extra": [1, 2]}  # the line may be empty; other keys are ignored
    assert check_log_record(minimal) is minimal
    assert LOG_RECORD(full) == full


def test_pipeline_is_cold_each_subscription_starts_fresh() -> None:
    pipeline = build_pipeline(reactivex.from_iterable(shipped_messages()[:50]), sources=SOURCES)
    first, _, _ = collect(pipeline)
    second, _, _ = collect(pipeline)
    assert [r.stats for r in first] == [r.stats for r in second]


# -- the pipeline over the shipped files -----------------------------------------------------


@pytest.fixture(scope="module")
def shipped_reports() -> list[WindowReport]:
    reports, errors, done = collect(build_pipeline(reactivex.from_iterable(shipped_messages()), sources=SOURCES))
    assert errors == [] and done == [True]
    return reports


def test_window_sums_equal_the_totals(shipped_reports: list[WindowReport]) -> None:
    per_source: dict[str, Counter[str]] = {}
    lines: Counter[str] = Counter()
    for report in shipped_reports:
        stats = report.stats
        lines[stats["source"]] += stats["lines"] + stats["late"]
        per_source.setdefault(stats["source"], Counter()).update(stats["by_level"])
        window_s = SOURCES[stats["source"]].window_s
        assert stats["window_end_s"] - stats["window_start_s"] == window_s == 600.0
        assert stats["window_start_s"] % window_s == 0
        assert sum(stats["by_level"].values()) == stats["lines"]
        assert stats["unparsed"] == 0
    assert lines == {name: 2000 for name in SOURCES}
    # independent counts, straight from the files
    assert per_source["Apache"] == Counter(APACHE_LEVEL.match(line).group(1) for line in raw_lines("Apache"))  # type: ignore[union-attr]
    assert per_source["HDFS"] == Counter(line.split()[3] for line in raw_lines("HDFS"))
    assert per_source["Apache"] == {"notice": 1405, "error": 595}
    assert per_source["HDFS"] == {"INFO": 1920, "WARN": 80}


def test_windows_of_a_source_come_out_in_time_order(shipped_reports: list[WindowReport]) -> None:
    starts: dict[str, list[float]] = {}
    for report in shipped_reports:
        starts.setdefault(report.stats["source"], []).append(report.stats["window_start_s"])
    for name, values in starts.items():
        assert values == sorted(values) and len(set(values)) == len(values), name
    # Apache's 2000 lines span 2005-12-04 04:47 .. 2005-12-05 19:15, in 10-minute windows with lines
    slots = {(int(line[9:11]), int(line[12:14]), int(line[15:17]) // 10) for line in raw_lines("Apache")}
    assert len(starts["Apache"]) == len(slots)


def test_alerts_follow_the_rule_on_the_shipped_data(shipped_reports: list[WindowReport]) -> None:
    """The error rule recomputed from the windows' stats alone: floors, then the baseline (mean
    errors of the last ``history`` earlier windows that do not overlap, once there are
    ``warmup`` of them), then the episode (a window touching the previous alerted-or-suppressed
    one alerts again only with error_factor times the errors of the alert that opened it); a
    window with an error alert has no other alert (grouped into it)."""
    earlier: dict[str, list[tuple[float, int]]] = {}
    episode: dict[str, tuple[float, int | None]] = {}
    for report in shipped_reports:
        stats = report.stats
        name = stats["source"]
        rules = SOURCES[name].alerts
        past = [e for end, e in earlier.setdefault(name, []) if end <= stats["window_start_s"]]
        past = past[-rules.history :]
        rule = (
            stats["lines"] >= rules.min_lines
            and stats["errors"] >= rules.min_errors
            and stats["error_rate"] >= rules.error_rate
            and (len(past) < rules.warmup or stats["errors"] >= rules.error_factor * sum(past) / len(past))
        )
        last_end, opened = episode.get(name, (float("-inf"), None))
        if last_end < stats["window_start_s"]:
            opened = None
        fires = rule and (opened is None or stats["errors"] >= rules.error_factor * opened)
        episode[name] = (stats["window_end_s"], (stats["errors"] if fires else opened) if rule else None)
        kinds = [a["kind"] for a in report.alerts]
        assert ("error_rate" in kinds) == fires, stats
        assert len(kinds) == len(set(kinds))  # at most one alert of each kind per window
        if fires:
            assert kinds == ["error_rate"]
        earlier[name].append((stats["window_end_s"], stats["errors"]))
    assert any(a["kind"] == "error_rate" for r in shipped_reports for a in r.alerts)
    assert any(not r.alerts and r.stats["lines"] >= 10 for r in shipped_reports)


# -- the service -----------------------------------------------------------------------------


class Recorder:
    def __init__(self, fail_on: str | None = None) -> None:
        self.records: list[tuple[str, Any, str | None]] = []
        self.fail_on = fail_on

    async def emit(self, topic: str, value: Any, *, key: str | None = None) -> None:
        await asyncio.sleep(0)
        if topic == self.fail_on:
            raise PublishError(f"refused {topic}")
        self.records.append((topic, value, key))


async def test_service_publishes_stats_and_alerts_and_reports_totals() -> None:
    recorder = Recorder()
    service = LogAnalyticsService(recorder.emit)
    reports, errors, done = collect(service.attach(reactivex.from_iterable(shipped_messages()), sources=SOURCES))
    assert errors == [] and done == [True] and service.done.is_set()
    await service.flush()

    stats = [(v, k) for t, v, k in recorder.records if t == "log.stats"]
    alerts = [(v, k) for t, v, k in recorder.records if t == "log.alert"]
    assert [v for v, _ in stats] == [r.stats for r in reports]  # in window order
    assert all(k == v["source"] for v, k in stats + alerts)
    assert [v for v, _ in alerts] == [a for r in reports for a in r.alerts] != []
    assert service.published == len(recorder.records)

    report = service.report()
    assert set(report) == set(SOURCES)
    for name, totals in report.items():
        mine = [v for v, _ in stats if v["source"] == name]
        assert totals["lines"] == 2000 == sum(v["lines"] + v["late"] for v in mine)
        assert totals["windows"] == len(mine)
        assert totals["alerts"] == sum(1 for v, _ in alerts if v["source"] == name)
        assert totals["unparsed"] == 0
        assert sum(totals["by_level"].values()) == 2000
        assert 1 <= len(totals["top_templates"]) <= 5
        counts = [c for _, c in totals["top_templates"]]
        assert counts == sorted(counts, reverse=True)
    assert report["Apache"]["by_level"] == {"notice": 1405, "error": 595}
    assert report["HDFS"]["by_level"] == {"INFO": 1920, "WARN": 80}
    assert report["HDFS"]["top_templates"][0][1] == 314  # blockMap updated lines, by grep:
    assert sum("blockMap updated" in line for line in raw_lines("HDFS")) == 314


class BatchRecorder(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, int]] = []

    async def emit_batch(self, topic: str, records: list[tuple[str | None, Any]]) -> None:
        await asyncio.sleep(0)
        self.calls.append((topic, len(records)))
        self.records.extend((topic, value, key) for key, value in records)


async def test_a_broker_emit_publishes_per_topic_with_its_emit_batch() -> None:
    one_by_one, batched = Recorder(), BatchRecorder()
    for recorder in (one_by_one, batched):
        service = LogAnalyticsService(recorder.emit)
        _, errors, _ = collect(service.attach(reactivex.from_iterable(shipped_messages()), sources=SOURCES))
        assert errors == []
        await service.flush()
        assert service.published == len(recorder.records)
    # everything went through emit_batch (the same records), in order within each topic
    assert batched.calls and sum(n for _, n in batched.calls) == len(batched.records) == len(one_by_one.records)
    for topic in ("log.stats", "log.alert"):
        assert [r for r in batched.records if r[0] == topic] == [r for r in one_by_one.records if r[0] == topic]
    assert any(n > 1 for _, n in batched.calls)  # several records per call


async def test_what_the_service_publishes_is_what_its_types_declare() -> None:
    """log.stats, log.alert, logs.late values validate as WindowStats, LogAlert, LateLine, with
    exactly their keys (the types feed the AsyncAPI document; they must not drift)."""
    import pydantic

    from reactive_services.logs import LateLine, LogAlert, WindowStats

    recorder = Recorder()
    service = LogAnalyticsService(recorder.emit)
    lines = list(shipped_messages())
    late = dataclasses.replace(lines[0], value={**lines[0].value, "line_no": 2001})  # a line hours too late
    _, errors, _ = collect(service.attach(reactivex.from_iterable([*lines, late]), sources=SOURCES))
    assert errors == []
    await service.flush()
    declared = {"log.stats": WindowStats, "log.alert": LogAlert, "logs.late": LateLine}
    seen = {topic for topic, _, _ in recorder.records}
    assert seen == set(declared), seen
    for topic, value, _ in recorder.records:
        pydantic.TypeAdapter(declared[topic]).validate_python(value)
        assert set(value) == set(declared[topic].__annotations__), topic


async def test_service_counts_unparsed_lines() -> None:
    service = LogAnalyticsService(Recorder().emit)
    messages = [msg("HDFS", 1, "081109 203615 148 INFO dfs.X: a"), msg("HDFS", 2, "???"), msg("HDFS", 3, "")]
    collect(service.attach(reactivex.from_iterable(messages), sources=SOURCES))
    await service.flush()
    assert service.report()["HDFS"]["unparsed"] == 2
    assert service.report()["HDFS"]["lines"] == 3


async def test_service_publish_failure_is_raised_by_flush(caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder(fail_on="log.stats")
    service = LogAnalyticsService(recorder.emit)
    collect(service.attach(reactivex.from_iterable(shipped_messages()[:100]), sources=SOURCES))
    with pytest.raises(PublishError, match="refused log.stats"):
        await service.flush()
    assert any("publish failed" in r.getMessage() for r in caplog.records)


async def test_service_keeps_publish_order_when_emits_take_different_times() -> None:
    order: list[int] = []

    async def emit(topic: str, value: Any, *, key: str | None = None) -> None:
        delay_turns = 5 if value["window_start_s"] % 7200 == 0 else 0
        for _ in range(delay_turns):
            await asyncio.sleep(0)
        order.append(int(value["window_start_s"]))

    service = LogAnalyticsService(emit)
    lines = [apache(f"{h:02d}:00:00", "notice", "x") for h in range(6)]
    collect(
        service.attach(
            reactivex.from_iterable([msg("Apache", n, line) for n, line in enumerate(lines, 1)]), sources=SOURCES
        )
    )
    await service.flush()
    assert order == sorted(order) and len(order) == 6


async def test_service_records_a_stream_error_and_flush_raises_it() -> None:
    service = LogAnalyticsService(Recorder().emit)
    bad = Message(topic="logs", partition=0, offset=0, key=b"x", value=42)
    _, errors, _ = collect(service.attach(reactivex.of(bad), sources=SOURCES))
    assert isinstance(service.error, ValidationError) and service.done.is_set()
    with pytest.raises(ValidationError):
        await service.flush()


def test_service_outside_an_event_loop_errors_the_stream_not_the_caller() -> None:
    service = LogAnalyticsService(Recorder().emit)
    _, errors, _ = collect(
        service.attach(reactivex.of(msg("Apache", 1, apache("04:10:00", "notice", "a"))), sources=SOURCES)
    )
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)


# -- replay and the in-memory broker ---------------------------------------------------------


async def test_replay_then_consume_through_the_in_memory_broker(tmp_path: Path) -> None:
    broker = InMemoryBroker()
    await broker.start()
    try:
        counts = await replay_logs(broker, default_files(), formats=SOURCES)
        assert counts == {name: 2000 for name in SOURCES}
        records = broker.records("logs")
        assert len(records) == 8000
        first_apache = next(r for r in records if r.key == b"Apache" and b'"line_no":1,' in r.raw)  # type: ignore[operator]
        assert first_apache.timestamp_ms == 1133671664000  # 2005-12-04T04:47:44Z

        service = LogAnalyticsService(broker.emit)
        stop = asyncio.Event()
        seen = 0

        def count(_: Message) -> None:
            nonlocal seen
            seen += 1
            if seen == 8000:
                stop.set()

        source = broker.source("logs", group_id="log-analytics", stop=stop).pipe(ops.do_action(count))
        service.attach(source, sources=SOURCES).subscribe()
        await asyncio.wait_for(service.done.wait(), timeout=30)
        await service.flush()
        report = service.report()
        assert {name: totals["lines"] for name, totals in report.items()} == counts
        assert report["Apache"]["by_level"] == {"notice": 1405, "error": 595}
        assert report["HDFS"]["by_level"] == {"INFO": 1920, "WARN": 80}
        stats_records = broker.records("log.stats")
        assert len(stats_records) == sum(t["windows"] for t in report.values())
        assert len(broker.records("log.alert")) == sum(t["alerts"] for t in report.values())
    finally:
        await broker.stop()


async def test_replay_uses_previous_time_for_unparseable_lines(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_text(apache("04:47:44", "notice", "a") + "\nnot a log line\n" + apache("04:47:45", "error", "b") + "\n")
    broker = InMemoryBroker()
    await broker.start()
    try:
        assert await replay_logs(broker, {"Apache": path}, topic="t", formats=SOURCES) == {"Apache": 3}
        assert [r.timestamp_ms for r in broker.records("t")] == [1133671664000, 1133671664000, 1133671665000]
    finally:
        await broker.stop()


async def test_replay_rejects_an_unknown_source(tmp_path: Path) -> None:
    broker = InMemoryBroker()
    await broker.start()
    try:
        with pytest.raises(ConfigError):
            await replay_logs(broker, {"Nope": tmp_path / "x.log"}, formats=SOURCES)
        assert broker.records("logs") == []
    finally:
        await broker.stop()


# -- event-time windows: lateness, sliding windows, logs.late ---------------------------------

ZK_FORMAT = "<Date> <Time> <Level> <Content>"


def zk(second: int, text: str = "tick", level: str = "INFO") -> str:
    """A line at 2024-01-01 00:00:00 + second (UTC)."""
    return f"2024-01-01 00:{second // 60:02d}:{second % 60:02d} {level} {text}"


T0 = 1704067200.0  # 2024-01-01T00:00:00Z


def zk_sources(**options: Any) -> dict[str, Any]:
    from reactive_services.logs import LogSource

    return {"Z": LogSource(name="Z", format=ZK_FORMAT, component_field=None, window_s=60.0, **options)}


def test_marble_on_time_late_but_allowed_and_too_late_lines() -> None:
    # window 60 s, allowed lateness 10 s: the watermark is (latest time - 10 s)
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(
        on_next(210, msg("Z", 1, zk(5))),  # on time, [0, 60)
        on_next(220, msg("Z", 2, zk(65))),  # [60, 120); watermark 55: [0, 60) stays open
        on_next(230, msg("Z", 3, zk(50))),  # 15 s out of order, but [0, 60) is open: late but allowed
        on_next(240, msg("Z", 4, zk(71))),  # watermark 61 >= 60: [0, 60) closes here
        on_next(250, msg("Z", 5, zk(40))),  # too late: its window has closed
        on_next(260, msg("Z", 6, zk(119))),  # [60, 120); watermark 109
        on_completed(300),  # flush: [60, 120) with the too-late line 5
    )
    results = scheduler.start(lambda: build_pipeline(xs, sources=zk_sources(allowed_lateness_s=10.0)))
    assert [(m.time, m.value.kind) for m in results.messages] == [(240, "N"), (300, "N"), (300, "C")]
    first, second = (m.value.value for m in results.messages[:2])
    assert (first.window.start, [e.line_no for e in first.window.items], first.window.late) == (T0, [1, 3], ())
    assert (second.window.start, [e.line_no for e in second.window.items]) == (T0 + 60, [2, 4, 6])
    assert [e.line_no for e in second.window.late] == [5]
    assert (first.stats["lines"], first.stats["late"], second.stats["lines"], second.stats["late"]) == (2, 0, 3, 1)


def test_without_lateness_the_out_of_order_line_is_too_late() -> None:
    lines = [zk(5), zk(65), zk(50), zk(71)]
    reports, errors, _ = collect(
        build_pipeline(
            reactivex.from_iterable([msg("Z", n, line) for n, line in enumerate(lines, 1)]), sources=zk_sources()
        )
    )
    assert errors == []
    assert [([e.line_no for e in r.window.items], [e.line_no for e in r.window.late]) for r in reports] == [
        ([1], []),
        ([2, 4], [3]),
    ]


def test_sliding_windows_each_line_in_every_window_containing_it() -> None:
    # window 60 s sliding every 30 s: windows start at ..., -30, 0, 30, 60, ...
    lines = [zk(10), zk(40), zk(70)]
    reports, errors, _ = collect(
        build_pipeline(
            reactivex.from_iterable([msg("Z", n, line) for n, line in enumerate(lines, 1)]),
            sources=zk_sources(slide_s=30.0),
        )
    )
    assert errors == []
    got = [(r.window.start - T0, [e.line_no for e in r.window.items]) for r in reports]
    # t=10 is in [-30, 30) and [0, 60); t=40 in [0, 60) and [30, 90); t=70 in [30, 90) and [60, 120)
    assert got == [(-30.0, [1]), (0.0, [1, 2]), (30.0, [2, 3]), (60.0, [3])]


async def test_service_totals_count_each_line_once_with_sliding_windows() -> None:
    recorder = Recorder()
    service = LogAnalyticsService(recorder.emit)
    lines = [zk(s, level="ERROR" if s % 3 == 0 else "INFO") for s in range(0, 600, 7)]  # 86 lines
    collect(
        service.attach(
            reactivex.from_iterable([msg("Z", n, line) for n, line in enumerate(lines, 1)]),
            sources=zk_sources(slide_s=20.0),
        )
    )
    await service.flush()
    totals = service.report()["Z"]
    assert totals["lines"] == 86
    assert totals["by_level"] == {
        "ERROR": sum(1 for s in range(0, 600, 7) if s % 3 == 0),
        "INFO": sum(1 for s in range(0, 600, 7) if s % 3 != 0),
    }
    stats = [v for t, v, _ in recorder.records if t == "log.stats"]
    assert sum(v["lines"] for v in stats) == 3 * 86  # every line is in 60 / 20 = 3 windows


async def test_service_publishes_too_late_lines_to_logs_late() -> None:
    recorder = Recorder()
    service = LogAnalyticsService(recorder.emit)
    lines = [zk(5), zk(65), zk(50, "straggler"), zk(71)]
    collect(
        service.attach(
            reactivex.from_iterable([msg("Z", n, line) for n, line in enumerate(lines, 1)]), sources=zk_sources()
        )
    )
    await service.flush()
    late = [(v, k) for t, v, k in recorder.records if t == "logs.late"]
    assert len(late) == 1
    value, key = late[0]
    assert key == "Z" and value["line_no"] == 3 and value["line"] == lines[2]
    assert value["event_time"] == "2024-01-01T00:00:50Z" and value["event_time_s"] == T0 + 50
    assert service.report()["Z"]["late"] == 1 and service.report()["Z"]["lines"] == 4


async def test_controller_dead_letters_malformed_records_and_goes_on() -> None:
    from reactive_services import Microservice
    from reactive_services.adapters import DeadLetterSink
    from reactive_services.examples.shop.services import LogAnalyticsController

    broker = InMemoryBroker()
    await broker.start()
    try:
        analytics = LogAnalyticsService(broker.emit)
        controller = LogAnalyticsController(analytics, DeadLetterSink(broker), sources=zk_sources())
        service = Microservice(broker, [controller], name="logs-test")
        await service.start()
        await broker.emit("logs", {"source": "Z", "line_no": 1, "line": zk(5)}, key="Z")
        await broker.emit("logs", {"source": "Z", "line_no": "two", "line": zk(6)}, key="Z")
        await broker.emit("logs", {"nope": 1}, key="Z")
        await broker.emit("logs", b"\xff not json", key="Z")
        await broker.emit("logs", {"source": "Z", "line_no": 5, "line": zk(7)}, key="Z")
        for _ in range(200):
            if controller.received >= 4:
                break
            await asyncio.sleep(0.01)
        await service.stop()
        await analytics.flush()
        assert analytics.report()["Z"]["lines"] == 2
        dead = broker.records("logs.DLT")
        assert len(dead) == 3
        reasons = [dict(m.headers).get("dlt.exception.type") for m in dead]
        assert reasons.count(b"ValidationError") == 2 and reasons.count(b"DecodeError") == 1
        # the validation failures name the field, as the logs record model reports it
        heads = [headers_to_dict(m.headers) for m in dead]
        assert [h["dlt.reason"] for h in heads if h["dlt.exception.type"] == "ValidationError"] == [
            "invalid logs record: line_no: Input should be a valid integer (got 'two')",
            "invalid logs record: line: Field required (got {'nope': 1})",
        ]
    finally:
        await broker.stop()


def test_lines_of_templates_merged_later_count_under_their_group_in_stats_and_alerts() -> None:
    # LogMiner gives "user alice logged in" .. "user dave logged in" ids of their own as they
    # arrive; the fifth user makes the position a variable and merges them into one group. The
    # window's stats (and the alert detector) must count the five lines as one template, with
    # its current text, not as four single lines under texts that no longer exist.
    users = ["alice", "bob", "carol", "dave", "erin"]
    lines = [apache(f"10:00:0{i}", "notice", f"user {u} logged in") for i, u in enumerate(users)]
    lines.append(apache("11:00:00", "notice", "user frank logged in"))  # closes the 10:00 window
    source = SOURCES["Apache"]
    reports, errors, _ = collect(
        build_pipeline(
            reactivex.from_iterable(msg("Apache", n, line) for n, line in enumerate(lines, 1)),
            sources={"Apache": source},
        )
    )
    assert not errors
    first = reports[0].stats
    assert first["lines"] == 5
    assert first["top_templates"] == [["user <*> logged in", 5]]
    second = reports[1].stats
    assert second["top_templates"] == [["user <*> logged in", 1]]
