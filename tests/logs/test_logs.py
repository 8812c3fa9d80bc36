"""reactive_services.logs: formats, timestamps, levels, templates, window stats and the alert rule."""

from __future__ import annotations

import csv
import dataclasses
import logging
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reactive_services.errors import ConfigError
from reactive_services.examples.shop.log_sources import DATA_DIR, SOURCES, default_files
from reactive_services.logs import (
    ERROR_LEVELS,
    DrainSettings,
    LogEvent,
    LogFormat,
    LogParser,
    LogSource,
    TemplateMiner,
    alert_for,
    infer_level,
    is_error,
    iso_utc,
    read_lines,
    window_stats,
)
from reactive_services.operators import Window


def raw_lines(name: str) -> list[str]:
    """The lines of a shipped file, read independently of the code under test."""
    with open(DATA_DIR / f"{name}_2k.log", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def parse_all(name: str) -> list[LogEvent]:
    parser = LogParser(SOURCES[name])
    return [parser.parse(line, n) for n, line in enumerate(read_lines(default_files()[name]), start=1)]


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


# -- data ------------------------------------------------------------------------------------


def test_shipped_data_and_licence_are_present() -> None:
    for name in SOURCES:
        assert (DATA_DIR / f"{name}_2k.log").is_file()
        assert (DATA_DIR / f"{name}_2k.log_structured.csv").is_file()
    assert "loghub" in (DATA_DIR / "LICENSE").read_text()
    readme = (DATA_DIR / "README.md").read_text()
    assert "https://github.com/logpai/loghub" in readme and "LICENSE" in readme


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_read_lines_matches_an_independent_read(name: str) -> None:
    assert read_lines(default_files()[name]) == raw_lines(name)
    assert len(raw_lines(name)) == 2000


def test_read_lines_splits_on_newlines_only(tmp_path: Path) -> None:
    # \r\n and a final newline end lines; a lone \r (or two before \n) stays in its line, as
    # `wc -l` counts: the line numbers are the file's
    path = tmp_path / "crlf.log"
    path.write_bytes(b"\xef\xbb\xbfa 1\r\r\nb\r2\r\nc \xff 3\n")
    assert read_lines(path) == ["a 1\r", "b\r2", "c \ufffd 3"]


# -- LogFormat -------------------------------------------------------------------------------


def test_from_loghub_builds_the_logparser_regex() -> None:
    fmt = LogFormat.from_loghub("<Date> <Time> <Pid> <Level> <Component>: <Content>")
    assert fmt.fields == ("Date", "Time", "Pid", "Level", "Component", "Content")
    assert fmt.regex.pattern == (
        r"^(?P<Date>.*?)\s+(?P<Time>.*?)\s+(?P<Pid>.*?)\s+(?P<Level>.*?)\s+(?P<Component>.*?):\s+(?P<Content>.*)$"
    )
    assert fmt.parse("081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 terminating") == {
        "Date": "081109",
        "Time": "203615",
        "Pid": "148",
        "Level": "INFO",
        "Component": "dfs.DataNode$PacketResponder",
        "Content": "PacketResponder 1 terminating",
    }


def test_from_loghub_text_between_fields_is_a_regex_and_runs_of_spaces_match_any_whitespace() -> None:
    fmt = LogFormat.from_loghub(r"<Month> <Date> <Time> <Level> <Component>(\[<PID>\])?: <Content>")
    assert fmt.parse("Jun 14 15:16:01 combo sshd(pam_unix)[19939]: check pass")["PID"] == "19939"  # type: ignore[index]
    without_pid = fmt.parse("Jul 27 14:41:57 combo   kernel: Linux version 2.6.5")
    assert without_pid is not None and without_pid["PID"] is None and without_pid["Component"] == "kernel"
    assert fmt.parse("no match here") is None


def test_from_loghub_last_field_takes_the_rest_and_line_is_stripped() -> None:
    fmt = LogFormat.from_loghub(r"\[<Time>\] \[<Level>\] <Content>")
    assert fmt.parse("[t] [error] a [b] c  \n") == {"Time": "t", "Level": "error", "Content": "a [b] c"}


@pytest.mark.parametrize("bad", ["no fields", "<A> <A>", "<not ok> x", "<A> ( <B>"])
def test_from_loghub_rejects_bad_formats(bad: str) -> None:
    with pytest.raises(ValueError):
        LogFormat.from_loghub(bad)


def test_log_source_checks_its_fields() -> None:
    with pytest.raises(ValueError):
        LogSource(name="x", format="<Date> <Content>", level_field="Level")
    with pytest.raises(ValueError):
        LogSource(name="x", format="<Date> <Message>", level_field=None, component_field=None)
    assert LogSource(name="x", format="<Content>", level_field=None, component_field=None).level_inferred


def test_log_source_default_fields_are_used_only_when_the_format_has_them() -> None:
    bare = LogSource(name="x", format="<Date> <Time> <Content>")
    assert (bare.level_field, bare.component_field, bare.level_inferred) == (None, None, True)
    event = LogParser(bare).parse("2024-01-02 10:00:00 disk failure on sda", 1)
    assert event.parsed and event.level == infer_level("disk failure on sda") and event.component is None
    full = LogSource(name="x", format="<Date> <Time> <Level> <Component>: <Content>")
    assert (full.level_field, full.component_field) == ("Level", "Component")
    # a default kept through dataclasses.replace is still a default: it follows the new format
    assert dataclasses.replace(full, format="<Date> <Level> <Content>").component_field is None


@pytest.mark.parametrize(
    "kwargs,key",
    [
        ({"format": "<Date> <Content>", "level_field": "Level"}, "level_field"),
        ({"format": "<Date> <Content>", "component_field": "Component"}, "component_field"),
        ({"format": "<Date> <Message>"}, "format"),
        ({"format": "<A> <A> <Content>"}, "format"),
        ({"format": "<Content>", "window_s": 0.0}, "window_s"),
        ({"format": "<Content>", "window_s": 60.0, "slide_s": 120.0}, "slide_s"),
        ({"format": "<Content>", "year": 0}, "year"),
        ({"format": "<Content>", "allowed_lateness_s": -1.0}, "allowed_lateness_s"),
    ],
)
def test_log_source_config_errors_name_the_key(kwargs: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as bad:
        LogSource(name="x", **kwargs)
    assert bad.value.key == key and str(bad.value).startswith(f"{key}: ") and isinstance(bad.value, ValueError)
    if key.endswith("_field"):
        assert f"<{kwargs[key]}> is not a field of the format '<Date> <Content>'" in str(bad.value)


# -- every shipped line parses, as loghub's ground truth says --------------------------------


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_shipped_line_parses_like_the_loghub_ground_truth(name: str) -> None:
    source = SOURCES[name]
    with open(DATA_DIR / f"{name}_2k.log_structured.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    lines = raw_lines(name)
    assert len(rows) == len(lines) == 2000
    for line, row in zip(lines, rows, strict=True):
        fields = source.log_format.parse(line)
        assert fields is not None, line
        for column in source.log_format.fields:
            assert (fields[column] or "") == row[column], (line, column)
    events = parse_all(name)
    assert all(event.parsed for event in events)


# -- timestamps ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, line, expected",
    [
        ("Apache", "[Sun Dec 04 04:47:44 2005] [notice] workerEnv.init() ok", utc(2005, 12, 4, 4, 47, 44)),
        ("HDFS", "081109 203615 148 INFO dfs.DataNode$PacketResponder: x", utc(2008, 11, 9, 20, 36, 15)),
        ("Linux", "Jun 14 15:16:01 combo sshd(pam_unix)[19939]: check pass", utc(2005, 6, 14, 15, 16, 1)),
        ("OpenSSH", "Dec 10 06:55:46 LabSZ sshd[24200]: Invalid user webmaster", utc(2015, 12, 10, 6, 55, 46)),
    ],
)
def test_timestamps_are_epoch_seconds_utc(name: str, line: str, expected: float) -> None:
    assert SOURCES[name].timestamp_of(line) == expected
    assert LogParser(SOURCES[name]).parse(line, 1).timestamp == expected


@pytest.mark.parametrize(
    "name, line",
    [
        ("Apache", "[Sun Feb 30 04:47:44 2005] [notice] no such day"),
        ("Apache", "[Sun Dex 04 04:47:44 2005] [notice] no such month"),
        ("HDFS", "08110 203615 148 INFO dfs.X: short date"),
        ("Linux", "Jun 14 25:16:01 combo kernel: hour 25"),
    ],
)
def test_a_bad_time_makes_the_line_unparsed(name: str, line: str) -> None:
    assert SOURCES[name].timestamp_of(line) is None
    assert LogParser(SOURCES[name]).parse(line, 1).parsed is False


def test_shipped_files_span_the_documented_dates() -> None:
    spans = {
        name: (min(e.timestamp for e in parse_all(name)), max(e.timestamp for e in parse_all(name))) for name in SOURCES
    }
    assert iso_utc(spans["Apache"][0]) == "2005-12-04T04:47:44Z"
    assert iso_utc(spans["HDFS"][1]) == "2008-11-11T10:20:17Z"
    assert iso_utc(spans["Linux"][0]).startswith("2005-06-14")
    assert iso_utc(spans["OpenSSH"][0]).startswith("2015-12-10")


# -- unparsed lines --------------------------------------------------------------------------


def test_unparseable_line_is_an_event_with_parsed_false_and_the_previous_time() -> None:
    parser = LogParser(SOURCES["HDFS"])
    first = parser.parse("081109 203615 148 INFO dfs.DataNode: ok", 1)
    garbage = parser.parse("  this is not an HDFS line  ", 2)
    assert first.parsed and not garbage.parsed
    assert garbage.timestamp == first.timestamp
    assert (garbage.level, garbage.component, garbage.content, garbage.line_no) == (
        "unknown",
        None,
        "this is not an HDFS line",
        2,
    )
    assert garbage.line == "  this is not an HDFS line  "


def test_unparseable_first_line_uses_the_fallback_time_else_zero() -> None:
    assert LogParser(SOURCES["Apache"]).parse("junk", 1, fallback_timestamp=123.5).timestamp == 123.5
    assert LogParser(SOURCES["Apache"]).parse("junk", 1).timestamp == 0.0


# -- levels ----------------------------------------------------------------------------------


def test_level_counts_equal_an_independent_count_and_the_acceptance_numbers() -> None:
    apache_regex = re.compile(r"^\[[^\]]*\] \[([a-z]+)\]")
    apache_independent = Counter(apache_regex.match(line).group(1) for line in raw_lines("Apache"))  # type: ignore[union-attr]
    hdfs_independent = Counter(line.split()[3] for line in raw_lines("HDFS"))
    assert apache_independent == {"notice": 1405, "error": 595}
    assert hdfs_independent == {"INFO": 1920, "WARN": 80}
    assert Counter(e.level for e in parse_all("Apache")) == apache_independent
    assert Counter(e.level for e in parse_all("HDFS")) == hdfs_independent


@pytest.mark.parametrize(
    "content, level",
    [
        ("Failed password for root from 1.2.3.4 port 22 ssh2", "error"),
        ("check pass; user unknown", "error"),
        ("reverse mapping checking getaddrinfo for x [1.2.3.4] failed - POSSIBLE BREAK-IN ATTEMPT!", "error"),
        ("ALERT exited abnormally with [1]", "error"),
        ("warning: something odd", "warning"),
        ("session opened for user news by (uid=0)", "info"),
        ("Received disconnect from 1.2.3.4: 11: Bye Bye [preauth]", "info"),
    ],
)
def test_infer_level_keyword_rule(content: str, level: str) -> None:
    assert infer_level(content) == level


def test_linux_and_openssh_levels_are_inferred_and_host_is_not_a_level() -> None:
    assert SOURCES["Linux"].level_inferred and SOURCES["OpenSSH"].level_inferred
    assert not SOURCES["Apache"].level_inferred and not SOURCES["HDFS"].level_inferred
    for name in ("Linux", "OpenSSH"):
        levels = Counter(e.level for e in parse_all(name))
        assert set(levels) <= {"error", "warning", "info"}
        assert "combo" not in levels
        # independent: every "Failed password" line is an error
        events = parse_all(name)
        assert all(e.level == "error" for e in events if "Failed password" in e.content)


def test_is_error_set_is_case_insensitive_and_excludes_warnings() -> None:
    assert is_error("ERROR") and is_error("error") and is_error("FATAL") and is_error("crit")
    assert not is_error("WARN") and not is_error("warning") and not is_error("notice") and not is_error("INFO")
    assert is_error("WARN", {"warn"})
    assert "warn" not in ERROR_LEVELS


# -- templates -------------------------------------------------------------------------------


def test_template_miner_masks_ids_and_groups_similar_lines() -> None:
    miner = TemplateMiner(DrainSettings(depth=4, sim_th=0.5))
    a = miner.add("Receiving block blk_-1608999687919862906 src: /10.250.19.102:54106 dest: /10.250.19.102:50010")
    b = miner.add("Receiving block blk_7503483334202473044 src: /10.251.215.16:55695 dest: /10.251.215.16:50010")
    assert a[0] == b[0]
    assert b[1] == "Receiving block <BLK> src: /<IP> dest: /<IP>"
    other = miner.add("Deleting block blk_1 file /mnt/hadoop/dfs/data/current/subdir19/blk_1")
    assert other[0] != a[0]
    assert miner.template(a[0]) == b[1] and miner.template(10_000) is None
    assert miner.cluster_count == 2


def test_template_miner_masks_hex_but_not_plain_numbers() -> None:
    miner = TemplateMiner(DrainSettings())
    assert miner.add("at 0x1f3a size 67108864 id 3fa2b9c0e1")[1] == "at <HEX> size <NUM> id <HEX>"


def test_drain3_is_quiet(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        TemplateMiner(DrainSettings()).add("hello 1")
    assert [r for r in caplog.records if r.name.startswith("drain3")] == []


def test_shipped_sources_mine_a_small_number_of_templates() -> None:
    for name in SOURCES:
        parser = LogParser(SOURCES[name])
        for n, line in enumerate(raw_lines(name), start=1):
            parser.parse(line, n)
        assert 3 <= parser.miner.cluster_count <= 200, name


# -- window stats and alerts -----------------------------------------------------------------


def event(level: str, template_id: int = 1, *, parsed: bool = True, t: float = 3600.0, line: str = "") -> LogEvent:
    return LogEvent(
        source="S",
        line_no=1,
        timestamp=t,
        level=level,
        component=None,
        content=f"{level} message",
        template_id=template_id,
        template=f"template {template_id}",
        parsed=parsed,
        line=line or f"raw {level} {template_id}",
    )


def test_window_stats_fields() -> None:
    items = (
        event("error", 1),
        event("notice", 2),
        event("notice", 2),
        event("ERROR", 3),
        event("unknown", 4, parsed=False),
    )
    window = Window(key="S", start=3600.0, end=7200.0, items=items, late=(event("notice", 2, t=10.0),))
    stats = window_stats(window, top_n=2)
    assert stats == {
        "source": "S",
        "window_start": "1970-01-01T01:00:00Z",
        "window_end": "1970-01-01T02:00:00Z",
        "window_start_s": 3600.0,
        "window_end_s": 7200.0,
        "lines": 5,
        "by_level": {"error": 1, "notice": 2, "ERROR": 1, "unknown": 1},
        "errors": 2,
        "error_rate": 0.4,
        "unparsed": 1,
        "top_templates": [["template 2", 2], ["template 1", 1]],
        "late": 1,
    }


def test_top_templates_use_the_latest_text_of_a_cluster() -> None:
    first = event("info", 7)
    later = LogEvent(**{**{f: getattr(first, f) for f in first.__dataclass_fields__}, "template": "more <*> general"})
    stats = window_stats(Window(key="S", start=0.0, end=1.0, items=(first, later)))
    assert stats["top_templates"] == [["more <*> general", 2]]


def window_of(errors: int, others: int) -> Window[LogEvent]:
    items = tuple(event("error", 1, line=f"err {i}") for i in range(errors)) + tuple(
        event("notice", 2) for _ in range(others)
    )
    return Window(key="S", start=0.0, end=3600.0, items=items)


def test_alert_fires_at_threshold_with_enough_lines() -> None:
    window = window_of(3, 7)  # 10 lines, rate 0.3
    stats = window_stats(window)
    alert = alert_for(stats, window.items, threshold=0.3, min_lines=10)
    assert alert == {
        "kind": "error_rate",
        "source": "S",
        "window_start": "1970-01-01T00:00:00Z",
        "window_end": "1970-01-01T01:00:00Z",
        "window_start_s": 0.0,
        "window_end_s": 3600.0,
        "message": "S: error rate 0.30 >= 0.3 (3 of 10 lines, 1970-01-01T00:00:00Z..1970-01-01T01:00:00Z)",
        "evidence": {
            "lines": 10,
            "errors": 3,
            "error_rate": 0.3,
            "threshold": 0.3,
            "min_lines": 10,
            "min_errors": 1,
            "baseline_errors": None,
            "error_factor": 1.0,
            "by_level": {"error": 3, "notice": 7},
        },
        "sample": ["err 0", "err 1", "err 2"],
    }


def test_alert_sample_is_at_most_three_lines() -> None:
    window = window_of(8, 2)
    alert = alert_for(window_stats(window), window.items)
    assert alert is not None and alert["sample"] == ["err 0", "err 1", "err 2"]


def test_alert_does_not_fire_below_threshold_or_with_too_few_lines() -> None:
    below = window_of(2, 8)
    assert alert_for(window_stats(below), below.items, threshold=0.3, min_lines=10) is None
    few = window_of(5, 4)  # rate 0.56 but 9 lines
    assert alert_for(window_stats(few), few.items, threshold=0.3, min_lines=10) is None
    assert alert_for(window_stats(few), few.items, threshold=0.3, min_lines=9) is not None


def test_iso_utc() -> None:
    assert iso_utc(0.0) == "1970-01-01T00:00:00Z"
    assert iso_utc(utc(2005, 12, 4, 4)) == "2005-12-04T04:00:00Z"


def test_default_files_point_into_the_data_dir() -> None:
    files = default_files()
    assert set(files) == {"Apache", "HDFS", "Linux", "OpenSSH"}
    assert all(isinstance(p, Path) and p.parent == DATA_DIR for p in files.values())
