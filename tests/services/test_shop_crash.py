"""The shop's pipeline handlers under the crash checker: nothing lost when the consumer dies anywhere."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from reactivex import Observer

from reactive_services.adapters import DeadLetterSink
from reactive_services.adapters.websocket import Notification
from reactive_services.examples.shop.inventory import InventoryService, InventoryStore
from reactive_services.examples.shop.notifications import NotificationController
from reactive_services.examples.shop.services import InventoryController
from reactive_services.testing import check_at_least_once

ORDERS = [{"order_id": f"o{i}", "items": [{"product_id": f"p{i % 5}", "quantity": 1}]} for i in range(120)]


async def test_the_notification_pipeline_loses_no_event() -> None:
    hub: Observer[Notification] = Observer()

    def pipeline(messages: Any) -> Any:
        return NotificationController(hub).events(messages)

    report = await check_at_least_once(
        pipeline,
        ORDERS,
        topic="order.created",
        inputs_of=lambda n: [n.event["data"]],
        key=lambda o: o["order_id"],
        partitions=3,
    )
    report.assert_ok()


async def test_the_notification_pipeline_loses_no_event_and_dead_letters_the_bad_ones() -> None:
    # a malformed event is dead-lettered (its commit held until the dead letter is acknowledged)
    hub: Observer[Notification] = Observer()
    events: list[Any] = [
        {"order_id": f"o{i}", "items": [{"product_id": "p", "quantity": 1, "remaining": -1 if i % 7 == 0 else 3}]}
        for i in range(120)
    ]

    def pipeline(messages: Any, broker: Any) -> Any:
        return NotificationController(hub, dead_letter=DeadLetterSink(broker)).events(messages)

    report = await check_at_least_once(
        pipeline,
        events,
        topic="inventory.updated",
        inputs_of=lambda n: [n.event["data"]],
        key=lambda o: o["order_id"],
        partitions=3,
    )
    report.assert_ok()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[InventoryStore]:
    async with InventoryStore(tmp_path / "inventory.db", seed={f"p{i}": 10_000 for i in range(5)}) as opened:
        yield opened


async def test_the_inventory_pipeline_loses_no_order(store: InventoryStore) -> None:
    # each order's reservation is a tracked SQLite transaction; redeliveries are absorbed by order id
    def pipeline(messages: Any, broker: Any) -> Any:
        return InventoryController(InventoryService(store, broker.emit), DeadLetterSink(broker)).orders(messages)

    report = await check_at_least_once(
        pipeline, ORDERS, topic="order.created", key=lambda o: o["order_id"], partitions=3, concurrency=2
    )
    report.assert_ok()
    for order in ORDERS:  # and every order has its outcome in the database
        outcome = await store.outcome(order["order_id"])
        assert outcome is not None and outcome.status == "applied"
