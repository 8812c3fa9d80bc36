"""Kafka-only behaviour of ``source(..., concurrency=K)``: pause/resume backpressure, no
rebalance while a message is held past ``max_poll_interval_ms``, commits at revocation.

Runs against the real broker of ``kafka_bootstrap`` (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from reactive_services.adapters import Message
from reactive_services.adapters.kafka import KafkaBroker, SourceStats
from reactive_services.errors import ConfigError
from reactive_services.testing import unique_name, wait_for


@pytest.fixture
async def make_broker(kafka_bootstrap: str) -> AsyncIterator[Callable[..., Any]]:
    brokers: list[KafkaBroker] = []

    async def make(**kwargs: Any) -> KafkaBroker:
        b = KafkaBroker(kafka_bootstrap, **kwargs)
        await b.start()
        brokers.append(b)
        return b

    yield make
    for b in brokers:
        await b.stop()


async def stats_of(broker: KafkaBroker, group: str) -> SourceStats:
    await wait_for(lambda: len(broker.source_stats(group)) == 1, what="the source to run")
    return broker.source_stats(group)[0]


async def test_full_window_pauses_fetching_and_memory_stays_bounded(make_broker: Callable[..., Any]) -> None:
    broker = await make_broker(max_batch=100, commit_interval_s=0.2)
    topic, group = unique_name("bp"), unique_name("g")
    n, k = 2000, 4
    await broker.create_topics([topic], partitions=3)
    await broker.emit_batch(topic, [(None, {"i": i}) for i in range(50)])
    gate = asyncio.Event()
    state = {"in_flight": 0, "max": 0, "handled": 0}
    stop, done = asyncio.Event(), asyncio.Event()

    async def work() -> None:
        await gate.wait()
        await asyncio.sleep(0)
        state["in_flight"] -= 1
        state["handled"] += 1
        if state["handled"] == n:
            stop.set()

    def on_next(m: Message) -> None:
        state["in_flight"] += 1
        state["max"] = max(state["max"], state["in_flight"])
        m.track(work())

    sub = broker.source(topic, group_id=group, stop=stop, concurrency=k).subscribe(
        on_next, lambda e: done.set(), done.set
    )
    try:
        stats = await stats_of(broker, group)
        await wait_for(lambda: state["in_flight"] == k, what="a full window")
        await wait_for(lambda: len(stats.paused) == 3, what="the partitions to be paused")
        assert stats.pauses == 1 and stats.resumes == 0
        # Produce the rest fast while the window is held full: nothing more is fetched.
        await broker.emit_batch(topic, [(None, {"i": i}) for i in range(50, n)])
        buffered = stats.buffered
        await asyncio.sleep(1.0)  # several poll periods while paused
        assert stats.buffered == buffered <= 100
        assert state["in_flight"] == k and len(stats.paused) == 3
        gate.set()
        await asyncio.wait_for(done.wait(), 60)
    finally:
        sub.dispose()
    assert state["handled"] == n and state["max"] == k
    assert stats.max_in_flight == k
    assert stats.max_buffered <= 100  # one fetch (max_batch) at most, whatever the input rate
    assert stats.resumes >= 1 and stats.pauses >= 1
    ends = await broker.end_offsets(topic)
    assert {p: await broker.committed(group, topic, p) for p in ends} == ends


@pytest.mark.parametrize("k", [1, 2])
async def test_holding_a_message_past_max_poll_interval_does_not_rebalance(
    make_broker: Callable[..., Any], k: int
) -> None:
    broker = await make_broker(
        consumer_options={"max_poll_interval_ms": 1500, "session_timeout_ms": 6000, "heartbeat_interval_ms": 300}
    )
    topic, group = unique_name("slow"), unique_name("g")
    await broker.create_topics([topic], partitions=1)
    await broker.emit_batch(topic, [("same-key", {"i": i}) for i in range(3)])
    held: list[asyncio.Future[None]] = []
    stop, done = asyncio.Event(), asyncio.Event()

    def on_next(m: Message) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        held.append(fut)
        m.track(fut)

    sub = broker.source(topic, group_id=group, stop=stop, concurrency=k).subscribe(
        on_next, lambda e: done.set(), done.set
    )
    try:
        stats = await stats_of(broker, group)
        await wait_for(lambda: len(held) == 1, what="the first message")
        await asyncio.sleep(4.0)  # more than twice max_poll_interval_ms
        assert len(held) == 1  # same key: the next one waits for the first
        held[0].set_result(None)
        await wait_for(lambda: len(held) == 2)
        held[1].set_result(None)
        await wait_for(lambda: len(held) == 3)
        held[2].set_result(None)
        await wait_for(lambda: stats.in_flight == 0)
        stop.set()
        await asyncio.wait_for(done.wait(), 30)
    finally:
        sub.dispose()
    assert stats.revocations == 0 and stats.assignments == 1
    assert await broker.committed(group, topic, 0) == 3


async def test_revocation_commits_contiguous_work_and_abandons_the_rest(make_broker: Callable[..., Any]) -> None:
    first = await make_broker(revoke_timeout_s=1.0, commit_interval_s=60.0)
    second = await make_broker(commit_interval_s=60.0)
    topic, group = unique_name("rev"), unique_name("g")
    await broker_setup(first, topic)
    held: list[tuple[int, asyncio.Future[None]]] = []

    def on_next(m: Message) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        held.append((m.offset, fut))
        m.track(fut)

    other: list[int] = []

    def hold_forever(m: Message) -> None:  # the second member never finishes: it commits nothing
        other.append(m.offset)
        m.track(asyncio.get_running_loop().create_future())

    errors: list[BaseException] = []
    sub = first.source(topic, group_id=group, concurrency=4).subscribe(on_next, errors.append)
    sub2 = None
    try:
        stats = await stats_of(first, group)
        await wait_for(lambda: len(held) == 4, what="4 in flight")
        for offset, fut in held:
            if offset in (0, 1, 3):  # 2 stays unfinished
                fut.set_result(None)
        await wait_for(lambda: len(held) == 7, what="3 more in flight")
        # A second member joins: the partitions are revoked (commit interval is 60 s, so
        # only the revocation commits), then given to one of the two members.
        sub2 = second.source(topic, group_id=group).subscribe(hold_forever, errors.append)
        await wait_for(lambda: stats.revocations >= 1 and stats.assignments >= 2, what="a rebalance", timeout=60)
        assert await first.committed(group, topic, 0) == 2  # 0, 1 done; 2 was not: abandoned, and 3..6 too
        delivered_before = len(held)
        for _offset, fut in held:
            if not fut.done():
                fut.set_result(None)  # the abandoned work ends late: it must not be committed
        await wait_for(lambda: len(other) > 0 or len(held) > delivered_before, what="a redelivery", timeout=60)
        redelivered = other[0] if other else held[delivered_before][0]
        assert redelivered == 2  # the new owner starts again from the first unfinished message
        assert await first.committed(group, topic, 0) == 2
    finally:
        sub.dispose()
        if sub2 is not None:
            sub2.dispose()
    assert errors == []


async def broker_setup(broker: KafkaBroker, topic: str) -> None:
    await broker.create_topics([topic], partitions=1)
    await broker.emit_batch(topic, [(None, {"i": i}) for i in range(10)])


def test_consumer_options_cannot_override_what_the_source_sets() -> None:
    with pytest.raises(ConfigError):
        KafkaBroker("127.0.0.1:9092", consumer_options={"enable_auto_commit": True})
    with pytest.raises(ConfigError):
        KafkaBroker("127.0.0.1:9092", revoke_timeout_s=0)
    assert KafkaBroker("127.0.0.1:9092", consumer_options={"max_poll_interval_ms": 5000}).consumer_options == {
        "max_poll_interval_ms": 5000
    }
