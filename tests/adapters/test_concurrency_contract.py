"""``source(..., concurrency=K)``: the same contract on the in-memory broker and on real Kafka.

Handlers track asyncio futures that the test resolves in a chosen order, so the order in which
messages complete is under the test's control (no timing assumptions beyond "eventually").
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from reactive_services.adapters import Broker, Message
from waiting import name, until

from reactive_services.errors import ConfigError


async def committed(broker: Broker, group: str, topic: str) -> int | None:
    return await broker.committed(group, topic, 0)


class Held:
    """An Observer whose every message tracks a future the test resolves; counts in flight."""

    def __init__(self) -> None:
        self.futures: dict[int, asyncio.Future[None]] = {}
        self.order: list[int] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.completed = False
        self.error: BaseException | None = None
        self.done = asyncio.Event()

    def on_next(self, m: Message) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.futures[m.offset] = fut
        self.order.append(m.offset)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        m.track(fut)

    def resolve(self, offset: int, exc: BaseException | None = None) -> None:
        self.in_flight -= 1
        if exc is None:
            self.futures[offset].set_result(None)
        else:
            self.futures[offset].set_exception(exc)

    def on_error(self, e: BaseException) -> None:
        self.error = e
        self.done.set()

    def on_completed(self) -> None:
        self.completed = True
        self.done.set()


async def test_commit_never_passes_an_unfinished_message(broker: Broker) -> None:
    topic, group = name("conc"), name("g")
    await broker.create_topics([topic], partitions=1)
    await broker.emit_batch(topic, [(None, {"i": i}) for i in range(8)])
    held, stop = Held(), asyncio.Event()
    sub = broker.source(topic, group_id=group, stop=stop, concurrency=4).subscribe(
        held.on_next, held.on_error, held.on_completed
    )
    try:
        await until(lambda: len(held.order) == 4, what="4 messages in flight")
        for offset in (3, 2, 1):  # everything but the oldest
            held.resolve(offset)
        await until(lambda: len(held.order) == 7, what="3 more delivered")
        assert held.order == list(range(7))
        assert held.max_in_flight == 4
        for _ in range(15):  # spans more than one commit interval of the Kafka source
            assert await committed(broker, group, topic) in (None, 0)
            await asyncio.sleep(0.1)
        held.resolve(0)  # 0..3 done, 4..6 in flight -> 4
        for offset in (6, 5):
            held.resolve(offset)
        await until(lambda: len(held.order) == 8, what="the last message")

        async def committed_is(value: int) -> bool:
            return await committed(broker, group, topic) == value

        deadline = asyncio.get_running_loop().time() + 10
        while not await committed_is(4):
            assert (await committed(broker, group, topic) or 0) <= 4
            assert asyncio.get_running_loop().time() < deadline, "commit did not reach 4"
            await asyncio.sleep(0.05)
        held.resolve(4)
        held.resolve(7)
        stop.set()
        await asyncio.wait_for(held.done.wait(), 30)
    finally:
        sub.dispose()
    assert held.completed and held.error is None
    assert await committed(broker, group, topic) == 8


async def test_per_key_order_is_kept(broker: Broker) -> None:
    topic, group = name("conc-key"), name("g")
    await broker.create_topics([topic], partitions=1)
    keys = [f"k{i % 3}" for i in range(15)] + [None] * 3
    await broker.emit_batch(topic, [(k, {"i": i}) for i, k in enumerate(keys)])
    events: list[tuple[str, Any, int]] = []
    held, stop = Held(), asyncio.Event()
    on_next = held.on_next

    def record(m: Message) -> None:
        events.append(("next", m.key, m.offset))
        on_next(m)

    sub = broker.source(topic, group_id=group, stop=stop, concurrency=4).subscribe(
        record, held.on_error, held.on_completed
    )
    rng = random.Random(7)
    try:
        finished: set[int] = set()
        while len(finished) < len(keys):
            await until(lambda: len(held.futures) > len(finished), what="a message in flight")
            await asyncio.sleep(0.02)  # let the source deliver whatever it may
            pending = [o for o in held.futures if o not in finished]
            offset = pending[-1] if rng.random() < 0.7 else rng.choice(pending)  # mostly newest first
            held.resolve(offset)
            finished.add(offset)
            events.append(("done", keys[offset].encode() if keys[offset] else None, offset))
        stop.set()
        await asyncio.wait_for(held.done.wait(), 30)
    finally:
        sub.dispose()
    assert held.error is None and held.completed
    assert held.max_in_flight <= 4
    # Per key: delivered in offset order, and never before the previous one of its key completed.
    busy: dict[bytes, int] = {}
    seen: dict[bytes, list[int]] = {}
    for kind, key, offset in events:
        if key is None:
            continue
        if kind == "next":
            assert key not in busy, f"{key!r}@{offset} delivered while {busy.get(key)} was in flight"
            busy[key] = offset
            seen.setdefault(key, []).append(offset)
        else:
            assert busy.pop(key) == offset
    for key, offsets in seen.items():
        assert offsets == sorted(offsets) and len(offsets) == 5, key
    assert await committed(broker, group, topic) == len(keys)


async def test_at_most_k_in_flight_and_everything_committed(broker: Broker) -> None:
    topic, group = name("conc-many"), name("g")
    await broker.create_topics([topic], partitions=3)
    n = 300
    await broker.emit_batch(topic, [(None, {"i": i}) for i in range(n)])
    state = {"in_flight": 0, "max": 0, "handled": 0}
    stop, done = asyncio.Event(), asyncio.Event()
    rng = random.Random(3)

    async def work() -> None:
        await asyncio.sleep(rng.random() * 0.004)
        state["in_flight"] -= 1
        state["handled"] += 1
        if state["handled"] == n:
            stop.set()

    def on_next(m: Message) -> None:
        state["in_flight"] += 1
        state["max"] = max(state["max"], state["in_flight"])
        m.track(work())

    sub = broker.source(topic, group_id=group, stop=stop, concurrency=4).subscribe(
        on_next, lambda e: done.set(), done.set
    )
    try:
        await asyncio.wait_for(done.wait(), 60)
    finally:
        sub.dispose()
    assert state["handled"] == n
    assert state["max"] == 4  # the bound is reached and never passed
    ends = await broker.end_offsets(topic)
    assert {p: await broker.committed(group, topic, p) for p in ends} == ends


async def test_a_failed_message_is_not_committed(broker: Broker) -> None:
    topic, group = name("conc-fail"), name("g")
    await broker.create_topics([topic], partitions=1)
    await broker.emit_batch(topic, [(None, {"i": i}) for i in range(6)])
    held = Held()
    sub = broker.source(topic, group_id=group, concurrency=3).subscribe(held.on_next, held.on_error, held.on_completed)
    boom = RuntimeError("write failed")
    try:
        await until(lambda: len(held.order) == 3)
        held.resolve(0)
        held.resolve(2)
        await until(lambda: len(held.order) == 5)
        held.resolve(3)
        held.resolve(4)
        await until(lambda: len(held.order) == 6)
        held.resolve(5)
        held.resolve(1, boom)  # everything after 1 is done, 1 fails
        await asyncio.wait_for(held.done.wait(), 30)
    finally:
        sub.dispose()
    assert held.error is boom and not held.completed
    assert await committed(broker, group, topic) == 1


async def test_concurrency_must_be_a_positive_int(broker: Broker) -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError):
            broker.source("t", group_id="g", concurrency=bad)  # type: ignore[arg-type]
