"""Fault tests on a real Kafka broker; every inventory (R8: batch-insert; R9: log-analytics) instance is a process
of its own.

See examples/shop/faults.py for the scenarios; `python bench/faults.py` prints the same as a table.
"""

from __future__ import annotations

import re

import pytest

from reactive_services.examples.shop.faults import R8_RECORDS, R10_RECORDS, run_scenario


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ["R1", "R2", "R3", "R4", "R7"])
async def test_no_order_is_lost_and_the_stock_is_exact(name: str, kafka_bootstrap: str) -> None:
    result = await run_scenario(name, kafka_bootstrap)
    assert result.sent == 1024
    assert result.processed == result.sent and result.lost == 0
    assert result.stock_exact
    if name == "R2":  # none applied twice (the stock is exact) and both instances got partitions
        assert "partitions per instance" in result.notes[-1]
    if name == "R4":
        assert result.dead_lettered == 20
        assert result.notes[-2:] == [
            "per-key order kept for 5 keys",
            "dead-letter reasons: DecodeError 5, ValidationError 15",
        ]
    else:
        assert result.dead_lettered == 0
    if name == "R7":  # graceful shutdown committed everything it handled: nothing processed twice
        assert result.duplicates == 0
        assert result.notes[0].endswith("exit 0")


@pytest.mark.timeout(300)
async def test_R8_a_batch_insert_pipeline_killed_mid_batch_loses_no_record(kafka_bootstrap: str) -> None:
    """The batch-insert process is SIGKILLed while a batch is being inserted, then restarted:
    every record is in the table (batches held their records' commits until inserted)."""
    result = await run_scenario("R8", kafka_bootstrap)
    assert result.sent == R8_RECORDS
    assert result.lost == 0 and result.processed == result.sent
    # only records inserted after the last commit before the kill may come again (at-least-once)
    where = next(note for note in result.notes if note.startswith("SIGKILL after"))
    found = re.match(r"SIGKILL after (\d+) of \d+ records inserted \((\d+) offsets committed\)", where)
    assert found is not None, where
    inserted, committed = int(found[1]), int(found[2])
    assert 0 <= result.duplicates <= inserted - committed
    assert result.dead_lettered == 0
    assert result.stock_exact is None and result.notes[0].startswith("no stock: batch-insert table")
    killed = result.notes[1]
    assert killed.startswith("SIGKILL after ") and "was being inserted: none of its rows stored" in killed, killed
    assert result.notes[2].startswith("every batch all or nothing")


@pytest.mark.timeout(300)
async def test_R9_the_log_analytics_killed_three_times_counts_every_line_once(kafka_bootstrap: str) -> None:
    """The log analytics process is SIGKILLed three times while Apache and HDFS lines are replayed into one
    partition, restarted each time: the last published ``log.stats`` of every hourly window equals the loghub
    ground truth (no line lost, none counted twice), though windows may be published again."""
    result = await run_scenario("R9", kafka_bootstrap)
    assert result.sent == 4000 and result.processed == result.sent
    assert result.lost == 0 and result.duplicates == 0
    assert result.dead_lettered == 0
    assert result.stock_exact is None and result.notes[0] == "no stock: log windows"
    kills, published, truth = result.notes[1:]
    assert kills.startswith("3 SIGKILLs (3 during the replay)") and kills.endswith("exit 0"), kills
    assert published.endswith(("none published twice", "each time with the same count")), published
    assert truth.startswith("every window equals the ground truth"), truth


@pytest.mark.timeout(300)
async def test_R10_an_exactly_once_transform_killed_twice_publishes_every_output_once(kafka_bootstrap: str) -> None:
    """The exactly-once transform process is SIGKILLed twice mid-stream and restarted: Kafka's own
    ``read_committed`` reader finds one output per input, none lost, none twice."""
    result = await run_scenario("R10", kafka_bootstrap)
    assert result.sent == R10_RECORDS
    assert result.lost == 0 and result.processed == result.sent
    assert result.duplicates == 0
    assert result.notes[0] == "processing_guarantee=exactly_once"
    assert [n.split(" with ")[0] for n in result.notes[1:3]] == ["SIGKILL 1", "SIGKILL 2"]
    assert result.notes[3] == f"{R10_RECORDS} outputs read with read_committed"


@pytest.mark.timeout(300)
async def test_R11_the_same_transform_at_least_once_repeats_outputs_and_loses_none(kafka_bootstrap: str) -> None:
    """The same kills at-least-once: nothing is lost, and the records handled after the last commit
    before each kill are published again after the restart (the duplicates exactly-once removes)."""
    result = await run_scenario("R11", kafka_bootstrap)
    assert result.lost == 0 and result.processed == result.sent == R10_RECORDS
    assert result.duplicates > 0
    assert result.notes[-1] == f"{R10_RECORDS + result.duplicates} outputs read with read_committed"
