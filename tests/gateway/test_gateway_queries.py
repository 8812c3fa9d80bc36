"""The request patterns the gateway's order view is made of, each answered by its service from
its own state: ``orders.get`` (order query service, SQLite), ``inventory.get_order`` (inventory
outcome) and ``notifications.get_order`` (bounded in-memory index)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from gatewayshop import until
from reactivex.testing import ReactiveTest, TestScheduler

from reactive_services import ClientProxy, Microservice
from reactive_services.adapters import DeadLetterSink, Message, encode_value, headers_to_dict
from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.errors import ConfigError, RemoteError, ValidationError
from reactive_services.examples.shop.inventory import InventoryService, InventoryStore, parse_order
from reactive_services.examples.shop.messages import ORDER_QUERY, OrderQuery
from reactive_services.examples.shop.notifications import NotificationController
from reactive_services.examples.shop.order_query import OrderQueryController, OrderStore, order_id_of
from reactive_services.examples.shop.services import InventoryController

pytestmark = pytest.mark.timeout(60)

ORDER = {"order_id": "o-1", "items": [{"product_id": "p1", "quantity": 2}], "total": 10.5}


async def test_the_order_store_keeps_the_first_value_per_order_id(tmp_path: Path) -> None:
    async with OrderStore(tmp_path / "data" / "orders.db") as store:
        assert await store.add(ORDER) is True
        assert await store.add({**ORDER, "total": 99.0}) is False
        assert await store.get("o-1") == ORDER
        assert await store.get("o-2") is None
        assert await store.count() == 1
    async with OrderStore(tmp_path / "data" / "orders.db") as reopened:  # on disk
        assert await reopened.get("o-1") == ORDER
    with pytest.raises(RuntimeError):
        await OrderStore(":memory:").get("o-1")


@pytest.mark.parametrize(
    "payload, message",
    [
        (None, r"\(root\): Input should be a valid dictionary or instance of OrderQuery"),
        ({}, "order_id: Field required"),
        ({"order_id": ""}, "order_id: String should have at least 1 character"),
        ({"order_id": "  "}, "order_id: String should match pattern"),
        ({"order_id": 7}, "order_id: Input should be a valid string"),
        ({"order_id": "x" * 257}, "order_id: String should have at most 256 characters"),
    ],
)
def test_a_malformed_query_is_a_validation_error_naming_the_field(payload: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=f"^invalid OrderQuery: {message}"):
        order_id_of(payload)


async def test_the_order_query_service_over_the_broker(tmp_path: Path) -> None:
    broker = InMemoryBroker()
    await broker.start()
    async with OrderStore(tmp_path / "orders.db") as store:
        controller = OrderQueryController(store)
        service = Microservice(broker, [controller], name="order-query")
        await service.start()
        try:
            async with ClientProxy(broker) as client:
                await client.emit("order.created", ORDER, key="o-1")
                await client.emit("order.created", ORDER, key="o-1")  # redelivered: absorbed
                await client.emit("order.created", {"order_id": "o-bad", "items": []}, key="o-bad")
                big = {"order_id": "o-big", "items": [{"product_id": "p" * 70_000, "quantity": 1}]}
                await client.emit("order.created", big)
                await until(
                    lambda: controller.stored + controller.duplicates + sum(service.dead_lettered.values()) == 4
                )
                assert (controller.stored, controller.duplicates) == (1, 1)
                assert service.dead_lettered == {"order.created": 2}
                reasons = sorted(headers_to_dict(r.headers)["dlt.reason"] for r in broker.records("order.created.DLT"))
                assert reasons == [  # the model's field path; the size limit before any validation
                    "invalid order.created: items: List should have at least 1 item after validation, not 0 (got [])",
                    f"order: record of {len(encode_value(big) or b'')} bytes, at most 65536",
                ]
                assert await client.send("orders.get", {"order_id": "o-1"}, timeout=5) == ORDER
                assert await client.send("orders.get", {"order_id": "o-bad"}, timeout=5) is None
                with pytest.raises(RemoteError) as info:
                    await client.send("orders.get", {"id": "o-1"}, timeout=5)
                assert info.value.remote_type == "ValidationError"
                assert info.value.remote_message.startswith("invalid OrderQuery: order_id: Field required")
        finally:
            await service.stop()
            await broker.stop()


async def test_inventory_get_order_answers_the_stored_outcome(tmp_path: Path) -> None:
    broker = InMemoryBroker()
    await broker.start()
    async with InventoryStore(tmp_path / "inventory.db", seed={"p1": 1}) as store:
        inventory = InventoryService(store, broker.emit)
        controller = InventoryController(inventory, DeadLetterSink(broker))
        await inventory.handle([parse_order({"order_id": "ok", "items": [{"product_id": "p1", "quantity": 1}]})])
        await inventory.handle([parse_order({"order_id": "no", "items": [{"product_id": "p9", "quantity": 1}]})])
        assert await controller.get_order(OrderQuery(order_id="ok")) == {
            "status": "applied",
            "items": [{"product_id": "p1", "quantity": 1, "remaining": 0}],
            "reason": None,
        }
        assert await controller.get_order(OrderQuery(order_id="no")) == {
            "status": "rejected",
            "items": [{"product_id": "p9", "quantity": 1}],
            "reason": "unknown product 'p9'",
        }
        assert await controller.get_order(OrderQuery(order_id="later")) is None
        with pytest.raises(ValidationError):  # what the runtime validates the request with
            ORDER_QUERY({"order_id": ""})
    await broker.stop()


def record(topic: str, value: Any, offset: int = 0) -> Message:
    return Message(topic=topic, partition=0, offset=offset, key=None, value=value, raw=b"{}")


def test_the_notification_index_lists_what_was_forwarded_per_order() -> None:
    scheduler = TestScheduler()
    hub = scheduler.create_observer()
    ticks = iter(f"t{i}" for i in range(100))
    controller = NotificationController(hub, namespace="ns.", clock=lambda: next(ticks))
    line = {"product_id": "p1", "quantity": 1}
    events = [
        ("ns.order.created", {"order_id": "o-1", "items": [line]}),
        ("ns.order.created", {"order_id": "o-2", "items": [line]}),
        ("ns.inventory.updated", {"order_id": "o-1", "items": [{**line, "remaining": 0}]}),
        ("ns.stock.low", {"product_id": "p1", "remaining": 0, "threshold": 2, "order_id": "o-1"}),
        ("ns.order.rejected", {"order_id": "o-2", "reason": "x", "items": [line]}),
        ("ns.log.stats", {"source": "HDFS"}),  # no order
        ("ns.log.alert", ["not", "an", "object"]),
    ]
    xs = scheduler.create_hot_observable(
        *[ReactiveTest.on_next(210 + i, record(t, v, i)) for i, (t, v) in enumerate(events)],
        ReactiveTest.on_completed(300),
    )
    scheduler.start(lambda: controller.events(xs))
    assert len(hub.messages) == len(events) + 1  # every event still reaches the hub
    assert controller.get_order(OrderQuery(order_id="o-1")) == [
        {"channel": "orders", "topic": "order.created", "sent_at": "t0"},
        {"channel": "inventory", "topic": "inventory.updated", "sent_at": "t2"},
        {"channel": "stock", "topic": "stock.low", "sent_at": "t3"},  # the order that took p1 low
    ]
    assert controller.get_order(OrderQuery(order_id="o-2")) == [
        {"channel": "orders", "topic": "order.created", "sent_at": "t1"},
        {"channel": "orders", "topic": "order.rejected", "sent_at": "t4"},
    ]
    assert controller.get_order(OrderQuery(order_id="o-3")) == []
    assert controller.indexed_orders == 2
    with pytest.raises(ValidationError):  # what the runtime validates the request with
        ORDER_QUERY({"order": "o-1"})


def test_the_notification_index_is_bounded_least_recently_notified_first() -> None:
    scheduler = TestScheduler()
    controller = NotificationController(scheduler.create_observer(), max_orders=3, max_per_order=2)
    events = [("order.created", f"o-{i}") for i in range(4)]  # o-0 is forgotten for o-3
    events += [("order.created", "o-1"), ("order.created", "o-4")]  # o-1 refreshed: o-2 goes for o-4
    events += [("order.rejected", "o-1"), ("inventory.updated", "o-1")]  # at most 2 per order
    items = [{"product_id": "p", "quantity": 1, "remaining": 0}]
    xs = scheduler.create_hot_observable(
        *[
            ReactiveTest.on_next(210 + i, record(t, {"order_id": o, "items": items, "reason": "r"}, i))
            for i, (t, o) in enumerate(events)
        ]
    )
    scheduler.start(lambda: controller.events(xs))
    assert controller.indexed_orders == 3
    assert controller.get_order(OrderQuery(order_id="o-0")) == []
    assert controller.get_order(OrderQuery(order_id="o-2")) == []
    assert [n["topic"] for n in controller.get_order(OrderQuery(order_id="o-1"))] == [
        "order.rejected",
        "inventory.updated",
    ]
    assert [n["topic"] for n in controller.get_order(OrderQuery(order_id="o-4"))] == ["order.created"]
    with pytest.raises(ConfigError):
        NotificationController(scheduler.create_observer(), max_orders=0)


async def test_notifications_get_order_over_the_broker() -> None:
    broker = InMemoryBroker()
    await broker.start()
    collected: list[Any] = []

    class Hub:
        def on_next(self, value: Any) -> None:
            collected.append(value)

        def on_error(self, error: Exception) -> None:
            pass

        def on_completed(self) -> None:
            pass

    controller = NotificationController(Hub())  # type: ignore[arg-type]
    service = Microservice(broker, [controller], name="notifications")
    await service.start()
    try:
        async with ClientProxy(broker) as client:
            await client.emit("order.created", ORDER, key="o-1")
            await until(lambda: len(collected) == 1)
            reply = await client.send("notifications.get_order", {"order_id": "o-1"}, timeout=5)
            assert [(n["channel"], n["topic"]) for n in reply] == [("orders", "order.created")]
            assert reply[0]["sent_at"].endswith("Z")
            assert await client.send("notifications.get_order", {"order_id": "o-9"}, timeout=5) == []
    finally:
        await service.stop()
        await broker.stop()
