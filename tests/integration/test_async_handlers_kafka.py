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

    class Handlers(Controller):
        @event_pattern(topic)
        async def handle(self, payload: dict[str, Any], message: Any) -> None:
            where = (message.partition, message.offset)
            running.add(where)
            await asyncio.sleep(0.01)  # n records take 4 s on one instance: the join happens mid-stream
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
