"""The crash checker (``check_at_least_once``): commit-safe pipelines pass, a pipeline that keeps
records without holding their commits fails with a message naming the problem."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import reactivex.operators as ops

from reactive_services.adapters import Message, track
from reactive_services.operators import (
    ChangelogStore,
    batch,
    map_async,
    sliding_event_time_window,
    tumbling_event_time_window,
)
from reactive_services.testing import check_at_least_once

RECORDS = [{"id": i, "t": i * 0.5} for i in range(120)]


def values(source: Any) -> Any:
    return source.pipe(ops.map(lambda m: m.value))


async def test_a_stateless_pipeline_passes() -> None:
    report = await check_at_least_once(lambda s: s.pipe(ops.filter(lambda m: m.value["id"] % 3 != 0)), RECORDS)
    report.assert_ok()
    assert len(report.scenarios) == 6 and all(report.scenarios.values())  # every scenario crashed at least once


async def test_records_the_pipeline_filters_out_are_not_reported_lost() -> None:
    report = await check_at_least_once(lambda s: s.pipe(ops.filter(lambda m: m.value["id"] < 10)), RECORDS)
    assert report.ok and report.lost == []


async def test_batch_with_a_tracked_insert_passes() -> None:
    inserted: list[list[Any]] = []

    async def insert(rows: list[Message]) -> None:
        await asyncio.sleep(0.001)
        inserted.append([m.value["id"] for m in rows])

    report = await check_at_least_once(
        lambda s: s.pipe(batch(0.02, 7)), RECORDS, sink=lambda rows: track(insert(rows)), partitions=3, key=str
    )
    report.assert_ok()
    assert inserted


@pytest.mark.parametrize("size_slide", [(5.0, 5.0), (5.0, 2.5)])
async def test_event_time_windows_pass(size_slide: tuple[float, float]) -> None:
    size, slide = size_slide
    report = await check_at_least_once(
        lambda s: s.pipe(sliding_event_time_window(size, slide, timestamp=lambda m: m.value["t"])), RECORDS
    )
    report.assert_ok()


async def test_keyed_tumbling_windows_over_partitions_pass() -> None:
    report = await check_at_least_once(
        lambda s: s.pipe(
            tumbling_event_time_window(4.0, timestamp=lambda m: m.value["t"], key=lambda m: m.value["id"] % 4)
        ),
        RECORDS,
        key=lambda r: str(r["id"] % 4),
        partitions=2,
        concurrency=3,
    )
    report.assert_ok()


async def test_map_async_passes() -> None:
    async def work(m: Message) -> Any:
        await asyncio.sleep(0.001)
        return m.value

    report = await check_at_least_once(lambda s: s.pipe(map_async(work, concurrency=4)), RECORDS, concurrency=4)
    report.assert_ok()


async def test_reactivex_buffer_with_count_loses_records_and_the_message_names_the_cause() -> None:
    report = await check_at_least_once(lambda s: s.pipe(ops.buffer_with_count(10)), RECORDS)
    assert not report.ok and report.lost
    lost = report.lost[0]
    assert lost.crash is not None and lost.crash.committed[0] > lost.offset
    with pytest.raises(AssertionError) as failure:
        report.assert_ok()
    text = str(failure.value)
    assert "at-least-once violated" in text and "without holding their commits" in text
    assert "buffer_*" in text and "batch()" in text
    assert f"offset {lost.offset}" in text


async def test_reactivex_scan_with_a_final_reduce_loses_records() -> None:
    # a running total emitted only at the end: everything handled before a crash is committed
    report = await check_at_least_once(
        lambda s: s.pipe(ops.map(lambda m: [m.value]), ops.reduce(lambda acc, x: acc + x, [])), RECORDS
    )
    assert report.lost and not report.ok


async def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="records"):
        await check_at_least_once(lambda s: s, [])
    with pytest.raises(ValueError, match="crash_every"):
        await check_at_least_once(lambda s: s, [1], crash_every=0)


def _keyed_windows(checkpointed: bool, slide: float | None = None) -> Any:
    def build(source: Any, broker: Any) -> Any:
        store = ChangelogStore(broker, "crash-windows") if checkpointed else None
        return source.pipe(
            sliding_event_time_window(
                4.0,
                slide or 4.0,
                timestamp=lambda m: m.value["t"],
                key=lambda m: m.value["k"],
                allowed_lateness_s=1.0,
                checkpoint=store,
            )
        )

    return build


# three keys interleaved on one partition, some records out of order (within the lateness)
KEYED = [{"id": i, "k": i % 3, "t": i * 0.5 - (0.7 if i % 7 == 0 else 0.0)} for i in range(150)]
# a busy key and a sparse one on one partition: the sparse key's open window holds the commit
# back while the busy key publishes windows, so a restart replays part of published windows
SKEWED = [{"id": i, "k": 0 if i % 40 == 2 else 1, "t": i * 0.5} for i in range(150)]


def _window_id(w: Any) -> Any:
    return (w.key, w.start)


@pytest.mark.parametrize("records", [KEYED, SKEWED], ids=["interleaved", "skewed"])
@pytest.mark.parametrize("slide", [None, 2.0])
async def test_checkpointed_windows_count_every_input_once_in_the_final_windows(
    slide: float | None, records: list[dict[str, Any]]
) -> None:
    report = await check_at_least_once(
        _keyed_windows(True, slide), records, output_id=_window_id, crash_every=17, random_scenarios=4
    )
    report.assert_ok()
    assert report.double_counted == [] and report.lost == []


async def test_without_a_checkpoint_a_window_published_again_after_a_crash_can_be_partial() -> None:
    # keys interleaved on one partition: the commit waits for the oldest open window of any key,
    # so a restart replays records of windows already published, and publishes them again with
    # only the replayed part: the final window misses records
    report = await check_at_least_once(
        _keyed_windows(False), SKEWED, output_id=_window_id, crash_every=17, random_scenarios=4
    )
    assert not report.ok and report.lost
