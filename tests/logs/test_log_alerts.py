"""The three alert rules (AlertDetector) and reading times of any loghub format (TimestampReader)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from reactive_services.logs import (
    AlertDetector,
    AlertRules,
    LogEvent,
    LogParser,
    LogSource,
    TimestampReader,
    window_stats,
)
from reactive_services.operators import Window


def ev(template_id: int, level: str = "info", *, n: int = 0, t: float = 0.0) -> LogEvent:
    return LogEvent(
        source="S",
        line_no=n,
        timestamp=t,
        level=level,
        component=None,
        content=f"c{template_id}",
        template_id=template_id,
        template=f"T{template_id} <*>",
        parsed=True,
        line=f"line {n} T{template_id}",
    )


def window(index: int, counts: dict[int, int], *, size: float = 60.0, errors: int = 0) -> Window[LogEvent]:
    """A window [index*size, (index+1)*size) holding counts[template] lines of each template."""
    items = []
    n = 0
    for template_id, count in counts.items():
        for _ in range(count):
            n += 1
            items.append(ev(template_id, "error" if n <= errors else "info", n=index * 1000 + n))
    return Window(key="S", start=index * size, end=(index + 1) * size, items=tuple(items))


def check(detector: AlertDetector, w: Window[LogEvent]) -> dict[str, dict]:
    alerts = detector.check(w, window_stats(w))
    kinds = [a["kind"] for a in alerts]
    assert len(kinds) == len(set(kinds))
    return {a["kind"]: a for a in alerts}


# -- error rate -----------------------------------------------------------------------------


def test_error_rate_alert_once_per_window_with_evidence() -> None:
    detector = AlertDetector(AlertRules(error_rate=0.5, min_lines=4, min_errors=1))
    got = check(detector, window(0, {1: 4}, errors=2))  # 2 of 4 = 0.5
    alert = got["error_rate"]
    assert alert["evidence"]["errors"] == 2 and alert["evidence"]["lines"] == 4
    assert alert["sample"] == ["line 1 T1", "line 2 T1"]
    assert (alert["window_start_s"], alert["window_end_s"]) == (0.0, 60.0)
    assert check(detector, window(1, {1: 4}, errors=1)) == {}  # 0.25
    assert check(detector, window(2, {1: 3}, errors=3)) == {}  # 3 lines < min_lines


# -- new template burst ---------------------------------------------------------------------


def test_new_template_needs_warmup_then_fires_for_a_burst_of_an_unseen_template() -> None:
    detector = AlertDetector(AlertRules(new_template_min=3, warmup=2, rise_min_count=1000))
    assert check(detector, window(0, {1: 5, 2: 5})) == {}  # everything is new: warm-up
    assert check(detector, window(1, {1: 5, 3: 4})) == {}  # 3 is new but still warming up (1 earlier window)
    got = check(detector, window(2, {1: 5, 4: 3, 5: 2}))  # 4: new, 3 lines; 5: new, only 2
    alert = got["new_template"]
    assert [(t["template_id"], t["count"]) for t in alert["evidence"]["templates"]] == [(4, 3)]
    assert alert["sample"] == ["line 2006 T4", "line 2007 T4", "line 2008 T4"]
    # 5 was seen (2 lines) in window 2: a burst of it later is not "never seen before"
    assert "new_template" not in check(detector, window(3, {5: 10}))


def test_a_template_seen_only_as_a_late_line_is_not_new_later() -> None:
    detector = AlertDetector(AlertRules(new_template_min=2, warmup=1, rise_min_count=1000))
    check(detector, Window(key="S", start=0.0, end=60.0, items=(ev(1),), late=(ev(9, t=-100.0),)))
    assert check(detector, window(1, {9: 5})) == {}
    assert "new_template" in check(detector, window(2, {8: 5}))


# -- template rate rise ---------------------------------------------------------------------


def test_rate_rise_against_the_mean_of_earlier_windows() -> None:
    rules = AlertRules(rise_factor=3.0, rise_min_count=10, history=3, warmup=2, new_template_min=1000)
    detector = AlertDetector(rules)
    check(detector, window(0, {1: 4, 2: 20}))
    check(detector, window(1, {1: 2, 2: 20}))
    # baseline of 1 = (4 + 2) / 2 = 3 -> 9 is below the 10-line minimum, 2 is flat
    assert check(detector, window(2, {1: 9, 2: 20})) == {}
    # baseline of 1 over the last 3 windows = (4 + 2 + 9) / 3 = 5 -> needs >= 15
    assert check(detector, window(3, {1: 14, 2: 20})) == {}
    # baseline = (2 + 9 + 14) / 3 = 8.33 -> 25 >= 25.0
    got = check(detector, window(4, {1: 25, 2: 20}))
    [rising] = got["template_rate"]["evidence"]["templates"]
    assert rising["template_id"] == 1 and rising["count"] == 25
    assert rising["baseline"] == pytest.approx(25 / 3)
    assert got["template_rate"]["evidence"]["history_windows"] == 3


def test_rate_rise_counts_missing_templates_as_zero_and_waits_for_warmup() -> None:
    detector = AlertDetector(AlertRules(rise_factor=2.0, rise_min_count=5, history=4, warmup=2, new_template_min=1000))
    assert check(detector, window(0, {1: 1, 2: 3})) == {}
    assert check(detector, window(1, {1: 6})) == {}  # only 1 earlier window: warm-up
    got = check(detector, window(2, {2: 6}))  # baseline of 2 = (3 + 0) / 2 = 1.5 -> 6 >= 3
    assert [t["template_id"] for t in got["template_rate"]["evidence"]["templates"]] == [2]


def test_rate_baseline_skips_overlapping_sliding_windows() -> None:
    detector = AlertDetector(AlertRules(rise_factor=2.0, rise_min_count=5, history=4, warmup=1, new_template_min=1000))
    size = 60.0

    def sliding(start: float, count: int) -> Window[LogEvent]:
        return Window(key="S", start=start, end=start + size, items=tuple(ev(1, n=i) for i in range(count)))

    check(detector, sliding(0.0, 4))
    # [30, 90) overlaps [0, 60): no earlier non-overlapping window -> warm-up, no alert even for 10 lines
    assert check(detector, sliding(30.0, 10)) == {}
    # [60, 120): the baseline is [0, 60) only (4 lines) -> 8 >= 2 * 4
    got = check(detector, sliding(60.0, 8))
    assert got["template_rate"]["evidence"]["history_windows"] == 1
    assert got["template_rate"]["evidence"]["templates"][0]["baseline"] == 4.0


@pytest.mark.parametrize("field,value", [("error_rate", 1.5), ("rise_factor", 1.0), ("min_lines", 0), ("history", 0)])
def test_bad_rules_fail_at_construction(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        AlertRules(**{field: value})


# -- times of any loghub format ---------------------------------------------------------------


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


# one real line of each loghub dataset (https://github.com/logpai/loghub), with the format of the
# logparser benchmark and the time read by hand
LOGHUB = [
    (
        "Zookeeper",
        r"<Date> <Time> - <Level>  \[<Node>:<Component>@<Id>\] - <Content>",
        "2015-07-29 17:41:44,747 - INFO  [QuorumPeer[myid=1]/0:0:0:0:0:0:0:0:2181:FastLeaderElection@774] - Notification time out: 3200",  # noqa: E501 - a real log line
        utc(2015, 7, 29, 17, 41, 44, 747000),
    ),
    (
        "Spark",
        "<Date> <Time> <Level> <Component>: <Content>",
        "17/06/09 20:10:40 INFO executor.CoarseGrainedExecutorBackend: Registered signal handlers for [TERM, HUP, INT]",
        utc(2017, 6, 9, 20, 10, 40),
    ),
    (
        "BGL",
        "<Label> <Timestamp> <Date> <Node> <Time> <NodeRepeat> <Type> <Component> <Level> <Content>",
        "- 1117838570 2005.06.03 R02-M1-N0-C:J12-U11 2005-06-03-15.42.50.675872 R02-M1-N0-C:J12-U11 RAS KERNEL INFO instruction cache parity error corrected",  # noqa: E501 - a real log line
        1117838570.0,
    ),
    (
        "HealthApp",
        r"<Time>\|<Component>\|<Pid>\|<Content>",
        "20171223-22:15:29:606|Step_LSC|30002312|onStandStepChanged 3579",
        utc(2017, 12, 23, 22, 15, 29, 606000),
    ),
    (
        "Windows",
        "<Date> <Time>, <Level>                  <Component>    <Content>",
        "2016-09-28 04:30:30, Info                  CBS    Loaded Servicing Stack v6.1.7601.23505",
        utc(2016, 9, 28, 4, 30, 30),
    ),
    (
        "Android",
        "<Date> <Time>  <Pid>  <Tid> <Level> <Component>: <Content>",
        "03-17 16:13:38.811  1702  2395 D WindowManager: printFreezingDisplayLogsopening app wtoken = null",
        utc(2000, 3, 17, 16, 13, 38, 811000),
    ),
    (
        "Proxifier",
        r"\[<Time>\] <Program> - <Content>",
        "[10.30 16:49:06] chrome.exe - proxy.cse.cuhk.edu.hk:5070 open through proxy proxy.cse.cuhk.edu.hk:5070 HTTPS",
        utc(2000, 10, 30, 16, 49, 6),
    ),
    (
        "Mac",
        r"<Month>  <Date> <Time> <User> <Component>\[<PID>\]( \(<Address>\))?: <Content>",
        "Jul  1 09:00:55 calvisitor-10-105-160-95 kernel[0]: IOThunderboltSwitch<0>(0x0)::listenerCallback - Thunderbolt HPD packet for route = 0x0 port = 11 unplug = 0",  # noqa: E501 - a real log line
        utc(2000, 7, 1, 9, 0, 55),
    ),
]


@pytest.mark.parametrize("name,fmt,line,expected", LOGHUB, ids=[row[0] for row in LOGHUB])
def test_time_of_each_loghub_format_is_detected(name: str, fmt: str, line: str, expected: float) -> None:
    source = LogSource(name=name, format=fmt, level_field=None, component_field=None)
    event = LogParser(source).parse(line, 1)
    assert event.parsed
    assert event.timestamp == pytest.approx(expected)


def test_year_and_explicit_time_format() -> None:
    fmt = r"\[<Time>\] <Program> - <Content>"
    line = "[10.30 16:49:06] chrome.exe - open"
    source = LogSource(name="P", format=fmt, level_field=None, component_field=None, year=2016)
    assert LogParser(source).parse(line, 1).timestamp == utc(2016, 10, 30, 16, 49, 6)
    day_first = LogSource(name="P", format=fmt, level_field=None, component_field=None, time_format="%d.%m %H:%M:%S")
    assert not LogParser(day_first).parse(line, 1).parsed  # month 30 does not exist
    assert LogParser(day_first).parse("[30.10 16:49:06] chrome.exe - open", 1).parsed


def test_iso_times_with_a_zone_are_converted_and_epoch_milliseconds_read() -> None:
    source = LogSource(name="I", format="<Datetime> <Content>", level_field=None, component_field=None)
    parser = LogParser(source)
    assert parser.parse("2015-07-29T18:41:45+02:00 a", 1).timestamp == utc(2015, 7, 29, 16, 41, 45)
    assert parser.parse("2015-07-29T16:41:46Z b", 2).timestamp == utc(2015, 7, 29, 16, 41, 46)
    epoch = LogParser(LogSource(name="E", format="<Timestamp> <Content>", level_field=None, component_field=None))
    assert epoch.parse("1117838570123 c", 1).timestamp == pytest.approx(1117838570.123)


def test_a_log_without_years_crossing_new_year_moves_to_the_next_year() -> None:
    source = LogSource(
        name="S", format="<Month> <Day> <Time> <Content>", level_field=None, component_field=None, year=2015
    )
    parser = LogParser(source)
    times = [
        parser.parse(line, n).timestamp
        for n, line in enumerate(
            ["Dec 31 23:59:59 a", "Jan  1 00:00:01 b", "Dec 31 23:59:58 c", "Jan  2 00:00:00 d"], start=1
        )
    ]
    # the third line is a late line of 2015, not Dec 31 2016
    assert times == [
        utc(2015, 12, 31, 23, 59, 59),
        utc(2016, 1, 1, 0, 0, 1),
        utc(2015, 12, 31, 23, 59, 58),
        utc(2016, 1, 2),
    ]


def test_the_first_reading_pattern_is_kept() -> None:
    reader = TimestampReader(["Date", "Time", "Content"])
    assert reader({"Date": "2015-07-29", "Time": "17:41:44,747"}) == pytest.approx(utc(2015, 7, 29, 17, 41, 44, 747000))
    assert reader.pattern == "%Y-%m-%d %H:%M:%S,%f"
    with pytest.raises(ValueError):
        reader({"Date": "17/06/09", "Time": "20:10:40"})  # another format: not this log's


def test_a_format_without_time_fields_uses_the_record_time_and_is_parsed() -> None:
    source = LogSource(name="N", format="<Level> <Content>", component_field=None)
    parser = LogParser(source)
    first = parser.parse("INFO started", 1, fallback_timestamp=120.0)
    assert (first.parsed, first.level, first.timestamp) == (True, "INFO", 120.0)


def test_a_line_whose_time_does_not_read_is_unparsed_and_keeps_the_previous_time() -> None:
    source = LogSource(name="Z", format="<Date> <Time> <Level> <Content>", component_field=None)
    parser = LogParser(source)
    assert parser.parse("2024-01-01 00:00:05 INFO a", 1).timestamp == utc(2024, 1, 1, 0, 0, 5)
    bad = parser.parse("2024-13-01 00:00:09 INFO b", 2)
    assert (bad.parsed, bad.level, bad.timestamp) == (False, "unknown", utc(2024, 1, 1, 0, 0, 5))


def test_the_baseline_leaves_out_a_window_overlapping_the_next_after_a_late_lines_own_window() -> None:
    # a window's own for a late line (a partition watermark or an idle flush) ends before the
    # windows seen already: the history is out of end order from then on, and the baseline of the
    # next window still takes only the windows that ended at or before its start
    rules = AlertRules(error_rate=0.1, min_lines=1, min_errors=1, error_factor=1.0, warmup=1)
    detector = AlertDetector(rules)
    check(detector, Window(key="S", start=0.0, end=10.0, items=(ev(1, n=1, t=1.0),)))
    check(detector, Window(key="S", start=20.0, end=30.0, items=tuple(ev(1, "error", n=i, t=21.0) for i in range(5))))
    check(detector, Window(key="S", start=10.0, end=20.0, items=(), late=(ev(2, n=9, t=11.0),)))  # ends before 30
    overlapping = Window(key="S", start=25.0, end=35.0, items=tuple(ev(1, "error", n=i, t=26.0) for i in range(2)))
    alert = check(detector, overlapping)["error_rate"]
    # the windows ending at 10 and 20 (no errors), not the one ending at 30 (5 errors)
    assert alert["evidence"]["baseline_errors"] == 0.0
