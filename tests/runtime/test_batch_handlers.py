"""``@event_pattern(..., pipeline=True, batches=True)``: a pipeline handler over ``Observable[Batch]``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from reactivex import Observable
from reactivex import operators as ops

from reactive_services import Microservice, event_pattern
from reactive_services.adapters import Batch, Message, track
from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.errors import ConfigError


def test_batches_needs_a_pipeline_handler() -> None:
    with pytest.raises(ConfigError) as caught:
        event_pattern("orders", batches=True)
    assert caught.value.key == "batches"


def test_batches_takes_no_model() -> None:
    with pytest.raises(ConfigError) as caught:
        event_pattern("orders", pipeline=True, batches=True, model=dict)
    assert caught.value.key == "model"


async def test_a_batch_handler_gets_batches_and_commits_after_their_tracked_work() -> None:
    broker = InMemoryBroker(max_batch=3)
    await broker.start()
    gate = asyncio.Event()
    seen: list[list[Any]] = []

    class Controller:
        @event_pattern("orders", pipeline=True, batches=True)
        def orders(self, batches: Observable[Batch]) -> Observable[Any]:
            def handle(batch: Batch) -> None:
                seen.append(list(batch.values))
                track(asyncio.ensure_future(gate.wait()))  # holds the whole batch's commit

            return batches.pipe(ops.do_action(handle))

    try:
        for n in range(5):
            await broker.emit("orders", {"n": n}, key="k")
        partition = broker.records("orders")[0].partition
        service = Microservice(broker, [Controller()], name="batches", group_id="g")
        await service.start()
        for _ in range(200):
            if seen:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        # the partition's next batch waits for this one, whose tracked work is not done
        assert seen == [[{"n": 0}, {"n": 1}, {"n": 2}]]
        assert await broker.committed("g", "orders", partition) is None
        gate.set()
        for _ in range(200):
            if await broker.committed("g", "orders", partition) == 5:
                break
            await asyncio.sleep(0.01)
        assert seen == [[{"n": 0}, {"n": 1}, {"n": 2}], [{"n": 3}, {"n": 4}]]
        assert await broker.committed("g", "orders", partition) == 5
        await service.stop()
    finally:
        await broker.stop()


def test_indexing_a_batch_makes_only_that_message_and_keeps_it() -> None:
    made: list[int] = []

    def make(record: int) -> Message:
        made.append(record)
        return Message(topic="t", partition=0, offset=record, key=None, value=None)

    carrier = Message(topic="t", partition=0, offset=12, key=None, value=None)
    batch = Batch("t", 0, ["a", "b", "c"], [10, 11, 12], make, carrier)
    first = batch[0]
    assert (first.offset, first.value, made) == (10, "a", [10])
    assert batch[-1].offset == 12 and made == [10, 12]  # negative indexes as a list's
    with pytest.raises(IndexError):
        batch[3]
    assert batch.messages[0] is first and made == [10, 12, 11]  # kept; the others made once
    assert [m.value for m in batch] == ["a", "b", "c"] and batch[1:] == batch.messages[1:]
    # what a message tracks or holds, the whole batch waits for: the carrier's lists
    assert first._holds is carrier._holds and batch[2]._pending is carrier._pending
