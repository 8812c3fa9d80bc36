"""``@event_pattern(..., pipeline=True, batches=True)``: a pipeline handler over ``Observable[Batch]``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from reactivex import Observable
from reactivex import operators as ops

from reactive_services import Microservice, event_pattern
from reactive_services.adapters import Batch, track
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
