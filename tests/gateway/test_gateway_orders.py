"""Orders and inventory through the gateway: real HTTP calls to uvicorn, the shop's services
running as Microservices (the whole flow on the in-memory broker and on Kafka)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from gatewayshop import PASSWORD, Shop, start_shop, until

from reactive_services import Controller, Microservice, message_pattern
from reactive_services.examples.shop.gateway import GatewaySettings

pytestmark = pytest.mark.timeout(120)


async def place(shop: Shop, items: list[dict[str, Any]], **extra: Any) -> str:
    response = await shop.http.post("/orders", json={"items": items, **extra}, headers=shop.headers())
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "accepted"
    assert response.headers["location"] == f"/orders/{body['order_id']}"
    return str(body["order_id"])


async def settled(
    shop: Shop, order_id: str, topics: set[str], *, headers: dict[str, str] | None = None, timeout: float = 10.0
) -> dict[str, Any]:
    """GET /orders/{id} until the inventory outcome and notifications of ``topics`` are there."""
    seen: list[dict[str, Any]] = []

    async def done() -> bool:
        response = await shop.http.get(f"/orders/{order_id}", headers=headers or shop.headers())
        assert response.status_code in (200, 404), response.text
        if response.status_code == 200:
            body = response.json()
            seen[:] = [body]
            return body["inventory"] is not None and topics <= {n["topic"] for n in body["notifications"] or []}
        return False

    await until(done, timeout=timeout, what=f"order {order_id} to settle")
    return seen[0]


async def test_an_order_placed_over_http_is_aggregated_from_three_services(broker: Any, tmp_path: Path) -> None:
    on_kafka = broker.kind == "kafka"
    settings = GatewaySettings(call_timeout_s=10.0 if on_kafka else 2.0)
    wait = 60.0 if on_kafka else 10.0
    async with start_shop(broker, tmp_path, settings=settings) as shop:
        login = await shop.http.post("/auth/login", json={"username": "alice", "password": PASSWORD})
        assert login.status_code == 200, login.text
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}

        response = await shop.http.post(
            "/orders",
            json={"items": [{"product_id": "p-plenty", "quantity": 2}], "customer_id": "c-1"},
            headers=headers,
        )
        assert response.status_code == 202, response.text
        order_id = response.json()["order_id"]
        assert len(order_id) == 32 and int(order_id, 16) >= 0  # uuid4 hex

        view = await settled(shop, order_id, {"order.created", "inventory.updated"}, headers=headers, timeout=wait)
        assert view["order_id"] == order_id
        assert view["missing"] == [] and view["errors"] == {}
        order = view["order"]
        assert order["order_id"] == order_id and order["customer_id"] == "c-1"
        assert list(order) == ["order_id", "items", "created_at", "customer_id"]  # an OrderCreated, no nulls
        assert order["items"] == [{"product_id": "p-plenty", "quantity": 2}]
        assert order["created_at"].endswith("Z")
        assert view["inventory"] == {
            "status": "applied",
            "items": [{"product_id": "p-plenty", "quantity": 2, "remaining": 8}],
            "reason": None,
        }
        channels = {n["topic"]: n["channel"] for n in view["notifications"]}
        assert channels == {"order.created": "orders", "inventory.updated": "inventory"}
        assert all(n["sent_at"].endswith("Z") for n in view["notifications"])

        stock = await shop.http.get("/inventory/p-plenty", headers=headers)
        assert (stock.status_code, stock.json()) == (200, {"product_id": "p-plenty", "stock": 8})

        # more than the stock: rejected, with the reason, notified on the orders channel
        rejected_id = await place(shop, [{"product_id": "p-last", "quantity": 2}])
        view = await settled(shop, rejected_id, {"order.created", "order.rejected"}, timeout=wait)
        assert view["inventory"]["status"] == "rejected"
        assert view["inventory"]["reason"] == "insufficient stock for product 'p-last': requested 2, available 1"
        assert {n["channel"] for n in view["notifications"]} == {"orders"}
        assert "customer_id" not in view["order"]
        assert list(view["order"]) == ["order_id", "items", "created_at"]


async def test_an_order_no_service_knows_is_404(shop: Shop) -> None:
    response = await shop.http.get("/orders/nope", headers=shop.headers())
    assert response.status_code == 404
    assert response.json() == {"detail": "unknown order 'nope'"}


async def test_an_order_known_to_some_parts_only_is_200_with_nulls(shop: Shop) -> None:
    # The inventory is stopped: the order query service and the notifications know the order.
    await shop.inventory_svc.stop()
    order_id = await place(shop, [{"product_id": "p-ghost", "quantity": 1}])
    await until(lambda: shop.order_query.stored == 1 and shop.notifications.indexed_orders == 1)
    response = await shop.http.get(f"/orders/{order_id}", headers=shop.headers())
    body = response.json()
    assert response.status_code == 200
    assert body["order"]["order_id"] == order_id
    assert body["missing"] == ["inventory"]  # stopped: it does not answer
    assert [n["topic"] for n in body["notifications"]] == ["order.created"]


async def test_with_the_inventory_stopped_the_aggregation_answers_200_within_the_call_timeout(
    memory_broker: Any, tmp_path: Path
) -> None:
    async with start_shop(memory_broker, tmp_path, settings=GatewaySettings(call_timeout_s=0.5)) as shop:
        order_id = await place(shop, [{"product_id": "p-plenty", "quantity": 1}])
        await settled(shop, order_id, {"order.created", "inventory.updated"})
        await shop.inventory_svc.stop()

        started = time.monotonic()
        response = await shop.http.get(f"/orders/{order_id}", headers=shop.headers())
        elapsed = time.monotonic() - started
        body = response.json()
        assert response.status_code == 200
        assert body["missing"] == ["inventory"]
        assert body["errors"] == {"inventory": "timed out after 0.5 s"}
        assert body["inventory"] is None
        assert body["order"]["order_id"] == order_id
        assert {n["topic"] for n in body["notifications"]} == {"order.created", "inventory.updated"}
        assert 0.4 <= elapsed < 2.0

        # every part down: still 200 (nothing is known to be missing), never 404 or 5xx
        await shop.orders_svc.stop()
        await shop.notify_svc.stop()
        started = time.monotonic()
        response = await shop.http.get(f"/orders/{order_id}", headers=shop.headers())
        assert time.monotonic() - started < 2.0
        assert response.status_code == 200
        assert sorted(response.json()["missing"]) == ["inventory", "notifications", "order"]

        # a single-call route answers 504 with a message
        started = time.monotonic()
        response = await shop.http.get("/inventory/p-plenty", headers=shop.headers())
        assert time.monotonic() - started < 2.0
        assert response.status_code == 504
        assert response.json() == {"detail": "inventory.get_stock: no answer within 0.5 s"}


async def test_stock_of_a_known_and_an_unknown_product(shop: Shop) -> None:
    response = await shop.http.get("/inventory/p-plenty", headers=shop.headers())
    assert (response.status_code, response.json()) == (200, {"product_id": "p-plenty", "stock": 10})
    response = await shop.http.get("/inventory/p-none", headers=shop.headers())
    assert (response.status_code, response.json()) == (200, {"product_id": "p-none", "stock": 0})
    response = await shop.http.get("/inventory/p-unknown", headers=shop.headers())
    assert (response.status_code, response.json()) == (404, {"detail": "unknown product 'p-unknown'"})


class BrokenInventory(Controller):
    @message_pattern("inventory.get_stock")
    def get_stock(self, payload: Any) -> None:
        raise RuntimeError("the disk is on fire")


async def test_a_remote_error_is_a_502_naming_its_type(shop: Shop) -> None:
    await shop.inventory_svc.stop()
    broken = Microservice(shop.broker, [BrokenInventory()], name="broken-inventory", namespace=shop.namespace)
    await broken.start()
    try:
        response = await shop.http.get("/inventory/p-plenty", headers=shop.headers())
    finally:
        await broken.stop()
    assert response.status_code == 502
    assert response.json() == {"detail": "inventory.get_stock failed: RuntimeError"}
    assert "fire" not in response.text  # the remote message stays in the gateway's log
