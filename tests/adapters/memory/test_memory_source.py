"""The in-memory source goes through the shared in-flight window at ``concurrency=1`` too, so it
ends, commits and dead-letters exactly as the Kafka source does."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from reactive_services.adapters import Message
from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.errors import ConfigError, PublishError
from reactive_services.testing import collect, consume, wait_for


async def test_concurrency_1_delivers_the_next_message_only_after_the_work_settled() -> None:
    async with InMemoryBroker(partitions=1) as broker:
        await broker.emit_batch("t", [(None, {"i": i}) for i in range(3)])
        held: list[asyncio.Future[None]] = []
        got: list[int] = []

        def on_next(m: Message) -> None:
            got.append(m.offset)
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            held.append(fut)
            m.track(fut)

        stop = asyncio.Event()
        sub = broker.source("t", group_id="g", stop=stop).subscribe(on_next)
        try:
            await wait_for(lambda: got == [0], what="the first message")
            await asyncio.sleep(0.1)
            assert got == [0]  # the window (K = 1) is full until 0 settled
            assert await broker.committed("g", "t", 0) is None  # nothing moved yet
            held[0].set_result(None)
            await wait_for(lambda: got == [0, 1], what="the second message")
            assert await broker.committed("g", "t", 0) == 1  # 1 is in flight: the commit stops there
            held[1].set_result(None)
            await wait_for(lambda: len(held) == 3, what="the third message")
            held[2].set_result(None)

            async def all_committed() -> bool:
                return await broker.committed("g", "t", 0) == 3

            await wait_for(all_committed, what="everything committed")
        finally:
            stop.set()
            sub.dispose()


class _DeadLetterTopicDown(InMemoryBroker):
    async def emit(self, topic: str, value: Any, **kwargs: Any) -> Any:
        if topic.endswith(".DLT"):
            raise PublishError(f"{topic} is down")
        return await super().emit(topic, value, **kwargs)


async def test_a_failed_dead_letter_ends_the_stream_and_nothing_from_it_is_committed() -> None:
    async with _DeadLetterTopicDown(partitions=1) as broker:
        await broker.emit("t", {"i": 0})
        await broker.emit("t", b"{not json")
        await broker.emit("t", {"i": 2})
        got: list[int] = []
        errors: list[Exception] = []
        done = asyncio.Event()
        broker.source("t", group_id="g").subscribe(
            lambda m: got.append(m.offset), lambda e: (errors.append(e), done.set()), done.set
        )
        await asyncio.wait_for(done.wait(), 5)
        assert got == [0]
        assert isinstance(errors[0], PublishError) and "t.DLT is down" in str(errors[0])
        assert await broker.committed("g", "t", 0) == 1  # the undecodable record is redelivered


async def test_retention_by_size_deletes_the_oldest_records_and_keeps_the_offsets() -> None:
    async with InMemoryBroker(partitions=1, retention_bytes=1000) as broker:
        metas = [await broker.emit("t", {"i": i, "pad": "x" * 30}) for i in range(100)]
        assert [m.offset for m in metas] == list(range(100))  # offsets are not reused
        kept = broker.records("t")
        assert sum(len(m.raw or b"") for m in kept) <= 1000 and len(kept) < 100
        start = (await broker.beginning_offsets("t"))[0]
        assert start == 100 - len(kept) and [m.offset for m in kept] == list(range(start, 100))
        assert await broker.end_offsets("t") == {0: 100}
        got = await consume(broker, "t", len(kept), group_id="fresh")
        assert [m.offset for m in got.items] == list(range(start, 100))  # earliest = the log start
        assert broker.lost_to_retention == {}  # a new group loses nothing: it starts at the log start


async def test_a_lagging_group_whose_records_were_deleted_is_told_and_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    async with InMemoryBroker(partitions=1, retention_bytes=600) as broker:
        for i in range(5):
            await broker.emit("t", {"i": i, "pad": "x" * 30})
        got = await consume(broker, "t", 2, group_id="slow")
        assert await broker.committed("slow", "t", 0) == 2
        for i in range(5, 60):
            await broker.emit("t", {"i": i, "pad": "x" * 30})
        start = (await broker.beginning_offsets("t"))[0]
        assert start > 2
        with caplog.at_level("WARNING", logger="reactive_services.adapters.memory"):
            got = await consume(broker, "t", 1, group_id="slow")
        assert got.items[0].offset == start
        assert broker.lost_to_retention == {"slow": start - 2}
        assert (
            f"group slow: {start - 2} record(s) of t[0] (offsets 2..{start - 1}) were deleted by retention"
            in caplog.text
        )


async def test_retention_by_age_deletes_records_older_than_the_limit() -> None:
    async with InMemoryBroker(partitions=1, retention_s=60.0) as broker:
        now_ms = int(time.time() * 1000)
        await broker.emit("t", {"i": 0}, timestamp_ms=now_ms - 120_000)  # deleted by the next append
        await broker.emit("t", {"i": 1}, timestamp_ms=now_ms - 1_000)
        assert [m.offset for m in broker.records("t")] == [1]


@pytest.mark.parametrize(
    ("option", "value"), [("retention_bytes", 0), ("retention_s", 0.0), ("retention_s", float("inf"))]
)
def test_bad_retention_is_a_configuration_error(option: str, value: float) -> None:
    with pytest.raises(ConfigError, match=option):
        InMemoryBroker(**{option: value})  # type: ignore[arg-type]


async def test_a_record_published_after_an_exactly_once_source_ended_joins_no_transaction() -> None:
    """A task the Observer left behind publishes after the source ended: the record is readable at once
    (it must not open a transaction nobody commits, which would hold every reader of its partition)."""
    async with InMemoryBroker() as broker:
        await broker.create_topics(["in", "out"], partitions=1)
        await broker.emit("in", {"i": 0})
        stop = asyncio.Event()
        late: list[asyncio.Future[Any]] = []

        async def later() -> None:
            await asyncio.sleep(0.05)
            await broker.emit("out", {"late": True})

        def on_next(m: Message) -> None:
            late.append(asyncio.ensure_future(later()))  # not tracked
            stop.set()

        source = broker.source("in", group_id="g", stop=stop, processing_guarantee="exactly_once")
        got = await collect(source, None, on_each=on_next)
        assert got.completed
        await late[0]
        seen = await consume(broker, "out", 1, timeout=5)
        assert [m.value for m in seen.items] == [{"late": True}]


async def test_a_service_creates_its_topics_with_the_memory_brokers_partitions() -> None:
    async with InMemoryBroker(partitions=1) as broker:
        await broker.create_topics(["t"])
        assert await broker.end_offsets("t") == {0: 0}
        await broker.create_topics(["u"], partitions=4)
        assert sorted(await broker.end_offsets("u")) == [0, 1, 2, 3]
