"""``async def`` payload handlers on a real Kafka broker, awaited by the source before the next
record: the commit never passes a record whose handler has not finished, across a rebalance."""

from __future__ import annotations

import asyncio
from typing import Any

from reactive_services import Controller, Microservice, event_pattern
from reactive_services.adapters.kafka import KafkaBroker
from reactive_services.testing import wait_for


async def test_async_handlers_commit_only_handled_records_across_a_rebalance(
    kafka_bootstrap: str, unique_topic
) -> None:
    topic, group = unique_topic("async"), unique_topic("g")
    n = 400
    done: set[tuple[int, int]] = set()
    running: set[tuple[int, int]] = set()
    violations: list[str] = []
    shared = asyncio.Event()  # set once both instances have partitions: handlers go faster then

    class Handlers(Controller):
        @event_pattern(topic)
        async def handle(self, payload: dict[str, Any], message: Any) -> None:
            where = (message.partition, message.offset)
            running.add(where)
            # slow until the partitions are shared out (so the join happens mid-stream), then quicker
            await asyncio.sleep(0.01 if shared.is_set() else 0.05)
            done.add(where)
            running.discard(where)

    async with KafkaBroker(kafka_bootstrap, commit_interval_s=0.05) as broker:
        await broker.create_topics([topic], partitions=3)
        await broker.emit_batch(topic, [(f"k{i % 11}", {"i": i}) for i in range(n)])
        ends = await broker.end_offsets(topic)

        async def watch_commits() -> None:
            """Every offset below a committed one was handled (polled while both instances run)."""
            while True:
                for partition in ends:
                    committed = await broker.committed(group, topic, partition) or 0
                    missing = [o for o in range(committed) if (partition, o) not in done]
                    if missing:
                        violations.append(f"p{partition} committed {committed} before {missing[:3]} were handled")
                await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch_commits())
        s1 = Microservice(broker, [Handlers()], name="async-1", group_id=group)
        s2 = Microservice(broker, [Handlers()], name="async-2", group_id=group)
        try:
            await s1.start()
            await wait_for(lambda: len(done) >= 40, timeout=60, what="s1 handling")
            await s2.start()  # joins: the partitions are shared out while s1's handlers suspend
            await wait_for(
                lambda: (
                    len(broker.source_stats(group)) == 2 and all(st.assignments for st in broker.source_stats(group))
                ),
                timeout=60,
                what="both instances assigned",
            )
            shared.set()
            await wait_for(lambda: len(done) == n, timeout=90, what="every record handled")
        finally:
            await s2.stop()
            await s1.stop()
            watcher.cancel()
        assert violations == []
        assert s1.errors == [] and s2.errors == []
        assert sum(s1.handled.values()) + sum(s2.handled.values()) >= n  # at least once
        assert sum(s2.handled.values()) > 0  # the partitions were shared out mid-stream
        assert {p: await broker.committed(group, topic, p) for p in ends} == ends


def _both_assigned(broker: KafkaBroker, group: str) -> bool:
    stats = broker.source_stats(group)
    return len(stats) == 2 and all(st.assignments for st in stats)


def _service(topic: str, state: dict[str, Any], delay_s: float = 0.0) -> Controller:
    """An async handler of ``topic`` noting each call and each finished record; it never returns on
    ``state["block"]``."""

    class Handlers(Controller):
        @event_pattern(topic)
        async def handle(self, payload: dict[str, Any]) -> None:
            state["calls"].append(payload["i"])
            if payload["i"] == state.get("block"):
                await asyncio.Event().wait()
            await asyncio.sleep(delay_s)
            state["done"].append(payload["i"])

    return Handlers()


async def test_commits_follow_slow_handlers_through_a_fetched_backlog(kafka_bootstrap: str, unique_topic: Any) -> None:
    """Found in review: while a fetched backlog was handled record by record, the source neither
    committed nor polled, so nothing was committed until the whole fetch was handled."""
    topic = unique_topic("slow")
    state: dict[str, Any] = {"calls": [], "done": []}
    async with KafkaBroker(kafka_bootstrap, commit_interval_s=0.1) as broker:
        await broker.create_topics([topic], partitions=1)
        await broker.emit_batch(topic, [("k", {"i": i}) for i in range(100)])
        service = Microservice(broker, [_service(topic, state, delay_s=0.02)], name=topic)
        await service.start()
        try:
            await wait_for(lambda: len(state["done"]) >= 10, timeout=30)
            # the 100 records came in one fetch (2 s of handlers): commits follow them meanwhile
            await wait_for(lambda: _committed_some(broker, topic), timeout=5, what="a commit mid-backlog")
            assert len(state["done"]) < 100
            await wait_for(lambda: len(state["done"]) == 100, timeout=30)
        finally:
            await service.stop()
        assert await broker.committed(topic, topic, 0) == 100


async def _committed_some(broker: KafkaBroker, topic: str) -> bool:
    return (await broker.committed(topic, topic, 0) or 0) > 0


async def test_slow_handlers_keep_the_consumer_in_its_group(kafka_bootstrap: str, unique_topic: Any) -> None:
    """Each handler takes a third of ``max_poll_interval_ms``; the source keeps polling (paused)
    while it works through the fetch, so the consumer is never counted idle (found in review:
    it left and rejoined its group)."""
    topic = unique_topic("poll")
    state: dict[str, Any] = {"calls": [], "done": []}
    async with KafkaBroker(kafka_bootstrap, consumer_options={"max_poll_interval_ms": 1500}) as broker:
        await broker.create_topics([topic], partitions=1)
        await broker.emit_batch(topic, [("k", {"i": i}) for i in range(8)])
        service = Microservice(broker, [_service(topic, state, delay_s=0.5)], name=topic)
        await service.start()
        try:
            await wait_for(lambda: len(state["done"]) == 8, timeout=30)
            [stats] = broker.source_stats(topic)
            assert stats.assignments == 1 and stats.revocations == 0  # never left the group
        finally:
            await service.stop()
        assert state["calls"] == list(range(8))  # each once
        assert await broker.committed(topic, topic, 0) == 8


async def test_stop_with_a_handler_that_never_returns_commits_what_was_handled(
    kafka_bootstrap: str, unique_topic: Any
) -> None:
    """``stop(timeout)`` cancels a handler that does not return, and returns only once the source
    committed the records handled before it and left its group (found in review: it returned at
    once and the commit came later, in the background)."""
    topic = unique_topic("stuck")
    state: dict[str, Any] = {"calls": [], "done": [], "block": 7}
    async with KafkaBroker(kafka_bootstrap, commit_interval_s=0.1) as broker:
        await broker.create_topics([topic], partitions=1)
        await broker.emit_batch(topic, [("k", {"i": i}) for i in range(20)])
        service = Microservice(broker, [_service(topic, state)], name=topic)
        await service.start()
        await wait_for(lambda: 7 in state["calls"], timeout=30)
        await service.stop(timeout=1.0)
        assert broker.source_stats() == []  # closed
        assert await broker.committed(topic, topic, 0) == 7
        again: dict[str, Any] = {"calls": [], "done": []}
        restarted = Microservice(broker, [_service(topic, again)], name=topic)
        await restarted.start()
        await wait_for(lambda: len(again["done"]) == 13, timeout=30)
        await restarted.stop()
        assert again["done"] == list(range(7, 20))
        assert await broker.committed(topic, topic, 0) == 20
