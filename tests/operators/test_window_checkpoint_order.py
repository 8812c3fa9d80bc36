"""A window's checkpoint is written only once the window went out, and in window order.

The checkpoint of an event-time window says "windows ending at or before E were published;
replay from offset R". Written before the window's own output settled (its publish still in
flight), a crash in between would make the restart skip that window: its lines lost. These
tests hold the outputs' publishes (tracked futures) and look at the changelog topic meanwhile.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from reactive_services.adapters import Message, track
from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.operators import ChangelogStore, Window, tumbling_event_time_window
from reactive_services.testing import wait_for


async def _changelog(broker: InMemoryBroker, store: ChangelogStore) -> list[dict[str, Any]]:
    """The checkpoint values written so far, in order (the changelog topic as stored)."""
    return [orjson.loads(m.value)["v"] for m in broker.records(store.topic)]


async def test_the_checkpoint_waits_for_the_windows_publish_and_for_the_windows_before_it() -> None:
    async with InMemoryBroker(partitions=1) as broker:
        store = ChangelogStore(broker, "w")
        publishes: list[asyncio.Future[None]] = []
        windows: list[Window[Message]] = []

        def publish(window: Window[Message]) -> None:  # its publish: in flight until the test says
            windows.append(window)
            publishes.append(track(asyncio.get_running_loop().create_future()))

        stop = asyncio.Event()
        broker.source("in", group_id="g", stop=stop).pipe(
            tumbling_event_time_window(10.0, timestamp=lambda m: m.value["t"], key=lambda m: "k", checkpoint=store)
        ).subscribe(publish)
        await broker.emit_batch("in", [("k", {"t": t}) for t in (1.0, 11.0, 21.0)])
        await wait_for(lambda: len(windows) == 2, timeout=5, what="windows [0, 10) and [10, 20) emitted")
        await asyncio.sleep(0.2)
        assert await _changelog(broker, store) == []  # neither publish settled: no checkpoint yet
        assert await broker.committed("g", "in", 0) in (None, 0)

        publishes[1].set_result(None)  # the second window's publish settles first
        await asyncio.sleep(0.2)
        assert await _changelog(broker, store) == []  # it waits for the first window's

        publishes[0].set_result(None)
        await wait_for(lambda: _written(broker, store, 2), timeout=5, what="both checkpoints")
        first, second = await _changelog(broker, store)
        assert (first["emitted_through"], second["emitted_through"]) == (10.0, 20.0)  # in window order
        assert second["resume"] == 2  # the record at t=21 is still in an open window
        await wait_for(lambda: _committed(broker, 2), timeout=5, what="offsets 0 and 1 committed")
        stop.set()  # the stop flushes the open window [20, 30): its publish settles, all is committed
        await wait_for(lambda: len(publishes) == 3, timeout=5, what="the last window at the stop")
        publishes[2].set_result(None)
        await wait_for(lambda: _committed(broker, 3), timeout=5, what="offset 2 committed")


async def _written(broker: InMemoryBroker, store: ChangelogStore, n: int) -> bool:
    return len(await _changelog(broker, store)) >= n


async def _committed(broker: InMemoryBroker, n: int) -> bool:
    return await broker.committed("g", "in", 0) == n
