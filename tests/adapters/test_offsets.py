"""OffsetTracker: the offset a consumer may commit with several messages in flight (pure, no asyncio)."""

from __future__ import annotations

import pytest

from reactive_services.adapters import OffsetTracker

TP = ("orders", 0)
TP1 = ("orders", 1)


def test_bug_report_case_commit_waits_for_32_and_33() -> None:
    # Committed offset 31 -> position 32; 32..37 delivered; 34..37 finish first.
    t: OffsetTracker = OffsetTracker()
    t.assign(TP, 32)
    for o in range(32, 38):
        t.start(TP, o)
    for o in (34, 35, 36, 37):
        assert t.complete(TP, o)
    assert t.committable(TP) == 32
    assert t.to_commit() == {}  # nothing new to commit past the committed position
    t.complete(TP, 33)
    assert t.committable(TP) == 32
    t.complete(TP, 32)
    assert t.committable(TP) == 38
    assert t.to_commit() == {TP: 38}


def test_out_of_order_completion_moves_to_lowest_in_flight() -> None:
    t: OffsetTracker = OffsetTracker()
    for o in range(10, 15):
        t.start(TP, o)
    assert t.committable(TP) == 10
    t.complete(TP, 12)
    t.complete(TP, 10)
    assert t.committable(TP) == 11
    t.complete(TP, 14)
    t.complete(TP, 11)
    assert t.committable(TP) == 13
    t.complete(TP, 13)
    assert t.committable(TP) == 15
    assert t.in_flight(TP) == 0


def test_gaps_in_offsets_do_not_hold_the_commit_back() -> None:
    # 3 is dead-lettered (started and completed at once); 5..6 never delivered (compacted).
    t: OffsetTracker = OffsetTracker()
    t.assign(TP, 2)
    t.start(TP, 2)
    t.start(TP, 3)
    t.complete(TP, 3)
    t.start(TP, 4)
    t.start(TP, 7)
    t.complete(TP, 4)
    t.complete(TP, 2)
    assert t.committable(TP) == 7
    t.complete(TP, 7)
    assert t.committable(TP) == 8


def test_a_filtered_message_counts_as_completed() -> None:
    t: OffsetTracker = OffsetTracker()
    t.start(TP, 0)
    t.start(TP, 1)  # filtered out by the pipeline: completes without work
    t.complete(TP, 1)
    assert t.committable(TP) == 0
    t.complete(TP, 0)
    assert t.committable(TP) == 2


def test_partitions_are_independent() -> None:
    t: OffsetTracker = OffsetTracker()
    t.start(TP, 0)
    t.start(TP1, 100)
    t.complete(TP1, 100)
    assert t.committable(TP) == 0
    assert t.committable(TP1) == 101
    assert t.in_flight() == 1
    assert t.to_commit() == {TP: 0, TP1: 101}
    t.mark_committed({TP: 0, TP1: 101})
    assert t.to_commit() == {}
    assert t.to_commit(only=[TP1]) == {}


def test_revocation_forgets_the_partition_and_late_completions() -> None:
    t: OffsetTracker = OffsetTracker()
    epoch = t.start(TP, 5)
    t.start(TP, 6)
    t.revoke(TP)
    assert t.committable(TP) is None
    assert t.complete(TP, 5) is False
    assert t.partitions() == []
    # Reassigned later from the committed position: a late completion of the old
    # assignment does not count for the new one.
    t.assign(TP, 5)
    t.start(TP, 5)
    assert t.complete(TP, 5, epoch) is False
    assert t.committable(TP) == 5
    assert t.complete(TP, 5, t.epoch(TP)) is True
    assert t.committable(TP) == 6


def test_nothing_started_gives_the_position_or_none() -> None:
    t: OffsetTracker = OffsetTracker()
    assert t.committable(TP) is None
    t.assign(TP, 42)
    assert t.committable(TP) == 42
    t.assign(TP1)
    assert t.committable(TP1) is None


def test_offsets_must_be_started_in_order() -> None:
    t: OffsetTracker = OffsetTracker()
    t.assign(TP, 10)
    with pytest.raises(ValueError):
        t.start(TP, 9)
    t.start(TP, 11)
    with pytest.raises(ValueError):
        t.start(TP, 11)
    assert t.complete(TP, 12) is False  # never started
    assert t.committable(TP) == 11


def test_advance_is_start_then_complete_and_keeps_the_order_rule() -> None:
    t: OffsetTracker = OffsetTracker()
    t.assign(TP, 10)
    t.advance(TP, 10)
    t.advance(TP, 11)
    assert t.committable(TP) == 12 and t.in_flight(TP) == 0
    t.start(TP, 12)  # tracked work in flight: the commit stays below it
    t.advance(TP, 13)
    assert t.committable(TP) == 12
    t.complete(TP, 12)
    assert t.committable(TP) == 14
    with pytest.raises(ValueError):
        t.advance(TP, 13)  # already passed
    t.advance(TP1, 5)  # an unknown partition starts at that offset
    assert t.committable(TP1) == 6


def test_a_batch_started_as_a_range_commits_all_of_it_or_nothing() -> None:
    t: OffsetTracker = OffsetTracker()
    t.assign(TP, 0)
    t.start(TP, 0, last=9)  # one unit: offsets 0..9
    assert t.committable(TP) == 0
    t.start(TP, 10, last=14)
    t.complete(TP, 10)
    assert t.committable(TP) == 0  # the first batch still in flight
    t.complete(TP, 0)
    assert t.committable(TP) == 15
    with pytest.raises(ValueError):
        t.start(TP, 12)  # inside a range already taken
