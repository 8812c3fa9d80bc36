"""reactive_services.logs (evaluation): grouping accuracy, the loghub ground truth, and bench/log_accuracy.py."""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest

from reactive_services.examples.shop.log_sources import DATA_DIR, DRAIN_PUBLISHED, SOURCES
from reactive_services.logs import DrainSettings, MinerSettings, evaluate_source, grouping_accuracy, read_ground_truth

ROOT = Path(__file__).resolve().parents[2]


def by_sets(predicted: list[object], truth: list[object]) -> float:
    """The definition, literally and slowly: line i is correct iff {j: pred[j] == pred[i]} ==
    {j: truth[j] == truth[i]}."""
    n = len(truth)
    correct = sum(
        1
        for i in range(n)
        if {j for j in range(n) if predicted[j] == predicted[i]} == {j for j in range(n) if truth[j] == truth[i]}
    )
    return correct / n


# -- grouping_accuracy on hand-made examples ----------------------------------------------------


def test_perfect_grouping_with_different_labels_is_1() -> None:
    # truth groups {0,1,2} {3,4} {5}; predicted groups {0,1,2} {3,4} {5} under other names.
    # all 6 lines sit in a group equal to their true group -> 6/6 = 1.0
    assert grouping_accuracy([7, 7, 7, "x", "x", None], ["a", "a", "a", "b", "b", "c"]) == 1.0


def test_merging_two_groups_costs_both() -> None:
    # truth {0,1,2} {3,4} {5}; predicted merges a and b: {0,1,2,3,4} {5}.
    # the merged group equals no true group -> its 5 lines are wrong; {5} is right -> 1/6
    assert grouping_accuracy([1, 1, 1, 1, 1, 2], ["a", "a", "a", "b", "b", "c"]) == pytest.approx(1 / 6)


def test_splitting_a_group_costs_the_whole_group() -> None:
    # truth {0,1,2} {3,4} {5}; predicted splits a: {0,1} {2} {3,4} {5}.
    # {0,1} and {2} are both strict subsets of {0,1,2} -> 3 lines wrong; {3,4} and {5} right -> 3/6
    assert grouping_accuracy([1, 1, 2, 3, 3, 4], ["a", "a", "a", "b", "b", "c"]) == 0.5


def test_one_line_moved_to_another_group() -> None:
    # truth {0,1,2,3} {4,5,6,7}; predicted moves line 3 into the second group: {0,1,2} {3,4,5,6,7}.
    # {0,1,2} is a strict subset of a's {0,1,2,3}; {3,...,7} mixes a and b -> nothing right -> 0/8
    assert grouping_accuracy([1, 1, 1, 2, 2, 2, 2, 2], list("aaaabbbb")) == 0.0


def test_all_in_one_group_and_all_singletons() -> None:
    # one true event, one predicted group -> 3/3
    assert grouping_accuracy([0, 0, 0], ["e", "e", "e"]) == 1.0
    # one true event, three singletons: each {i} != {0,1,2} -> 0/3
    assert grouping_accuracy([0, 1, 2], ["e", "e", "e"]) == 0.0
    # three true singletons, one predicted group: {0,1,2} != {i} -> 0/3
    assert grouping_accuracy([0, 0, 0], ["a", "b", "c"]) == 0.0
    # a single line is always grouped right -> 1/1
    assert grouping_accuracy(["p"], ["t"]) == 1.0


def test_invariant_under_permuting_labels() -> None:
    truth = ["a", "a", "b", "b", "b", "c", "d", "d"]
    predicted = [1, 1, 2, 2, 3, 4, 5, 5]
    # {0,1} right (2), {2,3} and {4} split b (0), {5} right (1), {6,7} right (2) -> 5/8
    assert grouping_accuracy(predicted, truth) == 5 / 8
    renamed_predicted = [{1: "z", 2: "y", 3: "x", 4: "w", 5: "v"}[p] for p in predicted]
    renamed_truth = [{"a": 40, "b": 30, "c": 20, "d": 10}[t] for t in truth]
    assert grouping_accuracy(renamed_predicted, truth) == 5 / 8
    assert grouping_accuracy(predicted, renamed_truth) == 5 / 8
    # swapping the roles of the two sequences does not change which lines are right either
    assert grouping_accuracy(truth, predicted) == 5 / 8


def test_invariant_under_reordering_lines() -> None:
    truth = ["a", "a", "b", "b", "b", "c", "d", "d"]
    predicted = [1, 1, 2, 2, 3, 4, 5, 5]
    order = [7, 2, 5, 0, 4, 1, 6, 3]
    assert grouping_accuracy([predicted[i] for i in order], [truth[i] for i in order]) == 5 / 8


def test_agrees_with_the_literal_set_definition_on_random_groupings() -> None:
    rng = random.Random(20190527)
    for _ in range(300):
        n = rng.randint(1, 25)
        truth = [rng.randint(0, 4) for _ in range(n)]
        # mostly the truth relabelled, with a few lines moved, so both outcomes are exercised
        predicted = [t + 10 if rng.random() > 0.15 else rng.randint(10, 15) for t in truth]
        assert grouping_accuracy(predicted, truth) == pytest.approx(by_sets(predicted, truth))


def test_accepts_any_sequences_of_hashables() -> None:
    assert grouping_accuracy((1, 1, 2), ("x", "x", "y")) == 1.0
    assert grouping_accuracy("aab", "xxy") == 1.0


def test_rejects_different_lengths_and_empty_input() -> None:
    with pytest.raises(ValueError, match="3 labels but truth has 2"):
        grouping_accuracy([1, 2, 3], ["a", "b"])
    with pytest.raises(ValueError, match="zero lines"):
        grouping_accuracy([], [])


# -- read_ground_truth -------------------------------------------------------------------------


def test_read_ground_truth_orders_by_line_id(tmp_path: Path) -> None:
    path = tmp_path / "Tiny_2k.log_structured.csv"
    path.write_text(
        'LineId,Content,EventId,EventTemplate\n2,"b, with a comma",E2,b <*>\n1,a 1,E1,a <*>\n3,a 2,E1,a <*>\n',
        encoding="utf-8",
    )
    assert read_ground_truth(path) == ["E1", "E2", "E1"]
    assert read_ground_truth(str(path)) == ["E1", "E2", "E1"]


def test_read_ground_truth_names_the_file_when_a_column_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "no_event.csv"
    path.write_text("LineId,Content,EventTemplate\n1,a,a\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"no_event\.csv.*EventId"):
        read_ground_truth(path)
    path = tmp_path / "no_line.csv"
    path.write_text("Content,EventId\na,E1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"no_line\.csv.*LineId"):
        read_ground_truth(path)
    path = tmp_path / "empty.csv"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match=r"empty\.csv.*LineId, EventId"):
        read_ground_truth(path)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("x,E1\n", "not an integer"),
        ("1,E1\n1,E2\n", "appears twice"),
        ("1,E1\n3,E2\n", r"not exactly 1\.\.2"),
        ("1,\n", "empty EventId"),
    ],
)
def test_read_ground_truth_rejects_bad_rows(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("LineId,EventId\n" + body, encoding="utf-8")
    with pytest.raises(ValueError, match=rf"bad\.csv.*{message}"):
        read_ground_truth(path)


# -- evaluate_source ---------------------------------------------------------------------------


def test_evaluate_source_on_a_tiny_file(tmp_path: Path) -> None:
    log = tmp_path / "Tiny_2k.log"
    log.write_text(
        "[Sun Dec 04 04:47:44 2005] [notice] workerEnv.init() ok /etc/httpd/conf/workers2.properties\n"
        "[Sun Dec 04 04:47:44 2005] [error] mod_jk child workerEnv in error state 6\n"
        "[Sun Dec 04 04:51:08 2005] [notice] jk2_init() Found child 6725 in scoreboard slot 10\n"
        "[Sun Dec 04 04:51:09 2005] [notice] jk2_init() Found child 6726 in scoreboard slot 8\n",
        encoding="utf-8",
    )
    truth = tmp_path / "Tiny_2k.log_structured.csv"
    truth.write_text("LineId,EventId\n1,E2\n2,E3\n3,E1\n4,E1\n", encoding="utf-8")
    result = evaluate_source(SOURCES["Apache"], log, truth)
    assert result == {
        "dataset": "Apache",
        "lines": 4,
        "accuracy": 1.0,
        "templates": 3,
        "events": 3,
        "mis_grouped": 0,
        "unparsed": 0,
        "settings": {"miner": "logminer", "merge_values": 5, "masks": 0},
    }
    # a LogSource works as well as its name; a stricter threshold splits the two jk2_init lines
    strict = DrainSettings(depth=4, sim_th=1.0, masking=())
    result = evaluate_source(SOURCES["Apache"], log, truth, miner=strict)
    # {3} and {4} are strict subsets of E1's {3,4}: 2 of 4 lines wrong -> 2/4
    assert (result["accuracy"], result["templates"], result["mis_grouped"]) == (0.5, 4, 2)
    assert result["settings"] == {"miner": "drain3", "depth": 4, "sim_th": 1.0, "max_children": 100, "masks": 0}
    assert SOURCES["Apache"].miner == MinerSettings()  # the source itself is untouched


def test_evaluate_source_rejects_mismatched_files(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("one\ntwo\n", encoding="utf-8")
    truth = tmp_path / "a.csv"
    truth.write_text("LineId,EventId\n1,E1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="2 lines but .* has 1 rows"):
        evaluate_source(SOURCES["Apache"], log, truth)


# -- the acceptance aim: at least Drain's published figure on every shipped dataset ------------


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_shipped_datasets_reach_drains_published_accuracy(name: str) -> None:
    result = evaluate_source(SOURCES[name], DATA_DIR / f"{name}_2k.log", DATA_DIR / f"{name}_2k.log_structured.csv")
    assert result["lines"] == 2000 and result["unparsed"] == 0
    assert result["accuracy"] >= DRAIN_PUBLISHED[name], result


def test_drain_published_covers_every_source() -> None:
    assert set(DRAIN_PUBLISHED) == set(SOURCES)


# -- bench/log_accuracy.py ---------------------------------------------------------------------


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_log_accuracy", ROOT / "bench" / "log_accuracy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_prints_a_row_per_dataset_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_bench()
    out = tmp_path / "figures.json"
    assert bench.main(["--json", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in bench.LOGHUB_FORMATS:
        assert name in printed
    assert "0.7875" in printed and "merge_values=" in printed and "average" in printed
    figures = json.loads(out.read_text(encoding="utf-8"))
    rows = {row["dataset"]: row for row in figures["datasets"]}
    assert set(rows) == set(bench.LOGHUB_FORMATS)  # the shipped four and the twelve samples
    for name, row in rows.items():
        assert row["lines"] == (2000 if name in SOURCES else 300)
        assert row["drain_published"] == bench.DRAIN_PUBLISHED[name]
        assert row["brain_published"] == bench.BRAIN_PUBLISHED[name]
        assert row["difference"] == pytest.approx(row["accuracy"] - bench.DRAIN_PUBLISHED[name], abs=1e-6)
        assert row["settings"] == {"miner": "logminer", "merge_values": 5, "masks": 0}  # the general settings
        assert row["accuracy"] >= bench.DRAIN_PUBLISHED[name], name
    assert figures["average"] >= 0.95
    for name in SOURCES:  # the shop's table agrees with the bench's
        assert DRAIN_PUBLISHED[name] == bench.DRAIN_PUBLISHED[name]


def test_bench_prints_a_row_per_dataset(capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_bench()
    assert bench.main([]) == 0
    out = capsys.readouterr().out
    assert "dataset" in out and "accuracy" in out and "Brain" in out
    rows = [line for line in out.splitlines() if any(f" {name} " in line for name in bench.LOGHUB_FORMATS)]
    assert len(rows) == len(bench.LOGHUB_FORMATS)


def test_bench_missing_files_exit_2_with_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert load_bench().main(["--data-dir", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: missing file(s): ")
    assert str(tmp_path / "HDFS_2k.log") in captured.err


def test_bench_runs_as_a_script(tmp_path: Path) -> None:
    import subprocess

    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "log_accuracy.py"), "--data-dir", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 2 and done.stderr.startswith("error: missing file(s)")
