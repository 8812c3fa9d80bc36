"""reactive_services.logs.LogMiner: the project's template miner (rules on hand-written lines,
streaming, state/restore, accuracy >= Drain's published figures with the general settings)."""

from __future__ import annotations

import importlib.util
import json
import random
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from reactive_services.errors import ConfigError
from reactive_services.examples.shop.log_sources import DATA_DIR, SOURCES
from reactive_services.logs import (
    DrainSettings,
    LogMiner,
    LogParser,
    MinerSettings,
    TemplateMiner,
    evaluate_source,
    grouping_accuracy,
    make_miner,
    make_source,
    read_lines,
)
from reactive_services.logs._miner import _NUMBER

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "tests" / "data" / "loghub"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("log_accuracy_for_miner_tests", ROOT / "bench" / "log_accuracy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def final_ids(miner: LogMiner, lines: list[str]) -> list[int]:
    ids = [miner.add(line)[0] for line in lines]
    return [miner.resolve(i) for i in ids]


def same_partition(ids: list[int], expected: list[str]) -> bool:
    return grouping_accuracy(ids, expected) == 1.0


# -- the rules, on hand-written lines (expected groups written by hand) ------------------------


def test_numbers_addresses_and_paths_are_variables_from_the_first_line() -> None:
    lines = [
        "Receiving block blk_-1608999687919862906 src: /10.250.19.102:54106",
        "Receiving block blk_7503483334202473044 src: /10.251.215.16:55695",
        "Deleting block blk_1 file /mnt/hadoop/dfs/data/current/subdir19/blk_1",
        "Connection to node-12 port 22 lost",
        "Connection to node-7 port 8080 lost",
        "interface ee0 up",  # a digit after a letter is part of a word: ee0 and alt0 differ
        "interface alt0 up",
    ]
    miner = LogMiner()
    ids = [miner.add(line)[0] for line in lines]  # no merge needed: the ids on arrival are final
    assert same_partition(ids, ["recv", "recv", "del", "conn", "conn", "ee0", "alt0"])
    assert miner.template(ids[0]) == "Receiving block <*> src: <*>"
    assert miner.merges == {}


def test_a_word_becomes_a_variable_after_merge_values_different_words() -> None:
    users = ["alice", "bob", "carol", "dave", "erin"]
    lines = [f"Invalid user {user} from 10.0.0.{i}" for i, user in enumerate(users)]
    lines += ["session opened for user root", "session closed for user root"]
    lines += ["Too many authentication failures for root", "Too many authentication failures for admin"]
    miner = LogMiner()
    arrival = [miner.add(line)[0] for line in lines]
    assert len(set(arrival[:4])) == 4  # four names: still four groups
    final = [miner.resolve(i) for i in arrival]
    assert same_partition(final, ["invalid"] * 5 + ["opened", "closed", "root", "admin"])
    # the first four ids are aliases of the survivor, whose template has the variable
    survivor = final[0]
    assert {miner.merges[i] for i in set(arrival[:5]) - {survivor}} == {survivor}
    assert miner.template(arrival[1]) == miner.template(survivor) == "Invalid user <*> from <*>"
    assert miner.cluster_count == 5


def test_lines_with_the_same_words_around_their_variables_are_one_group() -> None:
    lines = [
        "proxy.example.com:5070 close, 403 bytes sent, 426 bytes received, lifetime <1 sec",
        "proxy.example.com:5070 close, 1190 bytes (1.16 KB) sent, 1671 bytes (1.63 KB) received, lifetime 00:02",
        "removing telnet",
        "removing daytime",
        "removing /etc/xinetd.d/echo",  # a variable where the others have words: it takes them in
        "Sat Jun 18 02:08:10 2005 connection from 10.0.0.1 ()",
        "Sun Jun 19 12:00:01 2005 connection from 10.0.0.2 (host-2.example.org)",
    ]
    final = final_ids(LogMiner(), lines)
    assert same_partition(final, ["close", "close", "rm", "rm", "rm", "conn", "conn"])


def test_user_masks_name_their_matches() -> None:
    miner = LogMiner(MinerSettings(masking=((r"(?<=user )\w+", "USER"),)))
    assert miner.add("session opened for user alice on tty3")[1] == "session opened for user <USER> on tty3"
    assert miner.add("session opened for user bob on tty3")[0] == 1


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="^merge_values"):
        MinerSettings(merge_values=1)
    with pytest.raises(ValueError, match="^max_shapes"):
        MinerSettings(max_shapes=-1)
    assert isinstance(make_miner(None), LogMiner) and isinstance(make_miner(DrainSettings()), TemplateMiner)
    with pytest.raises(TypeError):
        make_miner("drain3")  # type: ignore[arg-type]


# -- streaming and state ---------------------------------------------------------------------


def contents(name: str) -> list[str]:
    parser = LogParser(SOURCES[name])
    return [parser.source.log_format.parse(line)["Content"] or "" for line in read_lines(DATA_DIR / f"{name}_2k.log")]  # type: ignore[index]


@pytest.mark.parametrize("name", ["OpenSSH", "Linux"])
def test_ids_are_given_as_lines_arrive_and_do_not_depend_on_later_lines(name: str) -> None:
    lines = contents(name)
    full = LogMiner()
    arrival = []
    for line in lines:
        tid, template = full.add(line)
        assert full.template(tid) == template  # the id is live when given
        arrival.append(tid)
    prefix = LogMiner()
    assert [prefix.add(line)[0] for line in lines[:700]] == arrival[:700]
    # every alias resolves to a live id; resolving is idempotent
    for merged, live in full.merges.items():
        assert full.resolve(live) == live and full.template(merged) == full.template(live)


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_state_restore_continues_like_an_uninterrupted_run(name: str) -> None:
    lines = contents(name)
    half = len(lines) // 2
    whole = LogMiner()
    expected = [whole.add(line) for line in lines]
    first = LogMiner()
    got = [first.add(line) for line in lines[:half]]
    snapshot = json.loads(json.dumps(first.state()))  # JSON-able
    assert snapshot["version"] == 1 and snapshot["kind"] == "logminer"
    second = LogMiner.restore(snapshot)
    got += [second.add(line) for line in lines[half:]]
    assert got == expected
    assert second.merges == whole.merges and second.cluster_count == whole.cluster_count
    assert [second.template(i) for i, _ in expected] == [whole.template(i) for i, _ in expected]


def test_restore_refuses_other_versions() -> None:
    state = LogMiner().state()
    with pytest.raises(ValueError, match="version"):
        LogMiner.restore({**state, "version": 99})
    with pytest.raises(ValueError, match="LogMiner state"):
        LogMiner.restore({"kind": "drain3"})


# -- accuracy with the general settings ------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_shipped_dataset_at_least_drain(name: str) -> None:
    bench = load_bench()
    assert SOURCES[name].miner == MinerSettings()  # the shipped sources use the general settings
    result = evaluate_source(SOURCES[name], DATA_DIR / f"{name}_2k.log", DATA_DIR / f"{name}_2k.log_structured.csv")
    assert result["accuracy"] >= bench.DRAIN_PUBLISHED[name], result


@pytest.mark.parametrize(
    "name",
    [
        "Android",
        "BGL",
        "HPC",
        "Hadoop",
        "HealthApp",
        "Mac",
        "OpenStack",
        "Proxifier",
        "Spark",
        "Thunderbird",
        "Windows",
        "Zookeeper",
    ],
)
def test_loghub_sample_at_least_drain(name: str) -> None:
    # a 300-line sample against Drain's published figure on its 2k file
    bench = load_bench()
    source = bench.source_for(name)
    assert source.miner == MinerSettings()
    result = evaluate_source(source, SAMPLES / f"{name}_300.log", SAMPLES / f"{name}_300.log_structured.csv")
    assert result["lines"] == 300
    assert result["accuracy"] >= bench.DRAIN_PUBLISHED[name], result


# -- choosing the miner ----------------------------------------------------------------------


def test_make_source_selects_the_miner_and_names_the_flags() -> None:
    assert make_source("HDFS", known=SOURCES).miner == MinerSettings()
    drain = make_source("HDFS", known=SOURCES, miner="drain3", depth=5, sim_th=0.6).miner
    assert drain == DrainSettings(depth=5, sim_th=0.6)
    with pytest.raises(ConfigError) as bad:
        make_source("HDFS", known=SOURCES, depth=5)  # drain3's option with the default miner
    assert bad.value.key == "depth"
    with pytest.raises(ConfigError) as bad:
        make_source("HDFS", known=SOURCES, miner="spell")
    assert bad.value.key == "miner"
    with pytest.raises(ConfigError) as bad:
        make_source("HDFS", known=SOURCES, miner="drain3", sim_th=2.0)
    assert bad.value.key == "sim_th"


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_the_line_cache_does_not_change_results(name: str) -> None:
    # add() caches masked lines by their text with numbers as "0"; the cache must be exact
    lines = contents(name) + [
        "Sat Jun 18 02:08:10 2005 x",
        "Sat Jun 1 2:8:1 5 x",
        "ee0 up",
        "ee1 up",
        "5 KB",
        "5.25 KB",
        "a\u0663" + "12 up",  # ASCII digits after another script's digit after a letter
        "a\u0663" + "345 up",
        "\u0663" + "12 KB",
        "12\u0663 x",
        "345\u0663 x",
        "1\u06632 y",
    ]
    cached, plain = LogMiner(), LogMiner()
    plain._line_cache = None  # the private cache, off
    assert [cached.add(line) for line in lines] == [plain.add(line) for line in lines]


def test_a_very_long_line_costs_linear_memory() -> None:
    # sibling keys are kept for lines of at most 128 tokens: a 30,000-token line would need 30,000
    # keys of 29,999 tokens each
    miner = LogMiner()
    line = " ".join(f"word{chr(97 + i % 26)}{chr(97 + i // 26 % 26)}x" for i in range(30_000))
    first = miner.add(line)
    assert miner.add(line) == first
    assert sum(len(key[2]) for key in miner._siblings) == 0  # the private sibling index: empty


def test_the_pipeline_lends_its_parsers_and_the_service_its_merges() -> None:
    import reactivex

    from reactive_services.adapters import Message
    from reactive_services.logs import LogAnalyticsService, LogParsers, build_pipeline

    lines = read_lines(DATA_DIR / "OpenSSH_2k.log")
    messages = [
        Message(topic="logs", partition=0, offset=i, key=b"OpenSSH", value={"line_no": i + 1, "line": line})
        for i, line in enumerate(lines)
    ]
    lent: list[LogParsers] = []
    events: list[Any] = []
    build_pipeline(
        reactivex.from_iterable(messages), sources=SOURCES, on_parsers=lent.append, on_event=events.append
    ).subscribe()
    [parsers] = lent
    miner = parsers.parsers["OpenSSH"].miner
    assert miner.merges  # OpenSSH's user names become variables after a few lines
    final = [miner.resolve(event.template_id) for event in events]
    assert len(final) == 2000
    service = LogAnalyticsService(lambda *args, **kwargs: None)  # type: ignore[arg-type,return-value]
    assert service.merges("OpenSSH") == {} and service.resolve("OpenSSH", 7) == 7  # nothing attached yet
    service.parsers = parsers
    assert service.merges("OpenSSH") == miner.merges
    assert all(service.resolve("OpenSSH", e.template_id) == f for e, f in zip(events, final, strict=True))


def test_the_line_cache_key_replaces_the_digit_runs_that_follow_no_letter_or_digit() -> None:
    reference = re.compile(r"(?<![A-Za-z0-9])[0-9]+")  # the rule as first written
    rng = random.Random(3)
    alphabet = "ab_-./: 0123456789é٣"
    for _ in range(5000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(20)))
        assert _NUMBER.sub("0", text) == reference.sub("0", text), text
    assert _NUMBER.sub("0", "blk_-1608 ssh2 10.0.0.1:22 x12") == "blk_-0 ssh2 0.0.0.0:0 x12"
