"""The in-memory source goes through the shared in-flight window at ``concurrency=1`` too, so it
ends, commits and dead-letters exactly as the Kafka source does."""

from __future__ import annotations

import asyncio
from typing import Any

from reactive_services.adapters import Message
from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.errors import PublishError
from reactive_services.testing import wait_for


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
