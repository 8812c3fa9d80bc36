"""Issue 15, done when: on real Kafka, two gateway instances (each its own KafkaBroker, hub and
NotificationLog fed from the log); a client receives events from the first, its connection is
cut, N events are published, it resumes on the other instance from its cursor and receives
exactly those N, in order, then the live stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from reactive_services.adapters import Message
from reactive_services.adapters.kafka import KafkaBroker
from reactive_services.adapters.websocket import (
    ConnectionState,
    Notification,
    NotificationLog,
    Reconnect,
    WebSocketServer,
    connect,
)
from reactive_services.testing import unique_name, wait_for

pytestmark = pytest.mark.timeout(120)

N = 25


@asynccontextmanager
async def gateway_instance(
    bootstrap: str, topics: dict[str, str], epoch: str, history: int = 10_000
) -> AsyncIterator[WebSocketServer]:
    """One gateway instance: its own broker client, NotificationLog and hub, fed by ``log.live()``."""

    def to_notification(message: Message) -> Notification | None:
        return Notification(topics[message.topic], message.value)

    async with KafkaBroker(bootstrap) as broker:
        log = NotificationLog(broker, list(topics), to_notification, epoch=epoch, poll_timeout_s=0.1, history=history)
        await log.open()
        async with WebSocketServer("127.0.0.1", 0, log=log, ping_interval=None, close_timeout=1.0) as server:
            feed = log.live().subscribe(server.hub)
            try:
                yield server
            finally:
                feed.dispose()


@pytest.mark.parametrize("history", [10_000, 0], ids=["from-memory", "from-the-log"])
async def test_a_client_cut_off_resumes_on_the_other_instance_with_exactly_the_missed_events(
    kafka_bootstrap: str, history: int
) -> None:
    orders, other = unique_name("ws-orders"), unique_name("ws-other")
    topics = {orders: "orders", other: "other"}
    epoch = unique_name("epoch")
    frames: list[dict[str, Any]] = []
    states: list[ConnectionState] = []
    errors: list[BaseException] = []
    async with KafkaBroker(kafka_bootstrap) as publisher:
        await publisher.create_topics([orders, other], partitions=3)

        async def publish(numbers: range) -> None:
            for n in numbers:
                await publisher.emit(orders, {"n": n}, key="order-1")  # one key: one partition, one order
                await publisher.emit(other, {"not": "subscribed"}, key=f"k{n}")  # another channel, any partition

        async with (
            gateway_instance(kafka_bootstrap, topics, epoch, history) as first,
            gateway_instance(kafka_bootstrap, topics, epoch, history) as second,
        ):
            # a long first delay, no jitter: the N events are published while the client is away
            policy = Reconnect(initial_s=3.0, max_s=3.0, jitter=0.0)
            subscription = connect(
                [first.url, second.url],
                subscribe=["orders"],
                events_only=True,
                reconnect=policy,
                on_state=states.append,
            ).subscribe(on_next=frames.append, on_error=errors.append)
            try:
                await wait_for(lambda: first.subscribers("orders") == 1, timeout=10)
                await publish(range(5))
                await wait_for(lambda: len(frames) == 5, timeout=20)

                # cut the connection (no close frame: the client sees 1006)
                first.clients[0].transport.connection.transport.abort()  # type: ignore[attr-defined]
                await wait_for(lambda: "reconnecting" in states, timeout=10)
                await publish(range(5, 5 + N))
                # the other instance's fan-out has them all before the client comes back: they
                # can reach it only from the log, through its cursor
                await wait_for(lambda: second.hub.published["orders"] == 5 + N, timeout=20)
                assert second.subscribers("orders") == 0

                await wait_for(lambda: len(frames) == 5 + N, timeout=20)
                assert [f["event"]["n"] for f in frames] == list(range(5 + N))
                assert second.hub.log is not None and second.hub.log.resumed == 1
                # from the second instance's history of frames, or from the log with a reader
                assert second.hub.log.resumed_from_history == (1 if history else 0)
                assert states.count("open") == 2

                await publish(range(5 + N, 5 + N + 3))  # then the live stream, on the other instance
                await wait_for(lambda: len(frames) == 5 + N + 3, timeout=20)
                await asyncio.sleep(0.5)
                assert [f["event"]["n"] for f in frames] == list(range(5 + N + 3))
                assert {f["channel"] for f in frames} == {"orders"}
                assert all("cursor" in f for f in frames)
                assert errors == []
            finally:
                subscription.dispose()


async def test_a_cursor_older_than_the_log_start_gets_recovery_failed_then_live(kafka_bootstrap: str) -> None:
    """On Kafka the log start moves (retention, or DeleteRecords as here): a cursor below it is
    refused plainly, then the live stream follows."""
    from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
    from aiokafka.structs import TopicPartition

    orders = unique_name("ws-orders")
    frames: list[dict[str, Any]] = []
    reasons: list[str] = []
    async with KafkaBroker(kafka_bootstrap) as publisher:
        await publisher.create_topics([orders], partitions=1)
        # history=0: a cursor within the in-memory history would be served from it, deleted or not
        async with gateway_instance(kafka_bootstrap, {orders: "orders"}, unique_name("epoch"), history=0) as gateway:
            assert gateway.hub.log is not None
            old = gateway.hub.log.cursor()  # offset 0
            for n in range(10):
                await publisher.emit(orders, {"n": n})
            admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
            await admin.start()
            try:
                await admin.delete_records({TopicPartition(orders, 0): RecordsToDelete(before_offset=6)})
            finally:
                await admin.close()
            assert await publisher.beginning_offsets(orders) == {0: 6}
            await wait_for(lambda: gateway.hub.published["orders"] == 10, timeout=20)
            subscription = connect(
                gateway.url, subscribe=["orders"], since=old, on_recovery_failed=reasons.append
            ).subscribe(on_next=frames.append)
            try:
                await wait_for(lambda: reasons != [], timeout=20)
                assert reasons == [
                    f"cursor too old: {orders}[0] keeps offsets from 6, the cursor is at 0 (deleted by retention)"
                ]
                await publisher.emit(orders, {"n": 10})
                await wait_for(lambda: any(f["type"] == "event" for f in frames), timeout=20)
                assert [f["type"] for f in frames] == ["subscribed", "recovery_failed", "event"]
                assert frames[-1]["event"] == {"n": 10}
            finally:
                subscription.dispose()
