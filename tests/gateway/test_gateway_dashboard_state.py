"""What a dashboard loads when it opens: ``GET /orders`` (the latest orders with their inventory
outcome: ``orders.latest`` + ``inventory.get_outcomes``) and ``GET /inventory`` (one page of the
stock, low products flagged: ``inventory.list_stock``), through the gateway on real HTTP.

The shop of ``gatewayshop`` is seeded with p-plenty: 10, p-last: 1, p-none: 0 and a low-stock
threshold of 2; the expectations below follow from those numbers and the orders each test places.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from gatewayshop import STEP, Shop, start_shop, until

from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.errors import RemoteError
from reactive_services.examples.shop import inventory
from reactive_services.examples.shop.gateway import GatewaySettings, _dashboard
from reactive_services.examples.shop.inventory import InventoryStore, Order, OrderItem

pytestmark = pytest.mark.timeout(60)


async def place(shop: Shop, items: list[dict[str, Any]]) -> str:
    response = await shop.http.post("/orders", json={"items": items}, headers=shop.headers())
    assert response.status_code == 202, response.text
    return str(response.json()["order_id"])


async def latest(shop: Shop, **params: Any) -> dict[str, Any]:
    response = await shop.http.get("/orders", params=params, headers=shop.headers())
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def place_stored(shop: Shop, items: list[dict[str, Any]]) -> str:
    """Place an order and wait until the order query service stored it (orders travel on
    several partitions: "latest" is the order in which that service stored them)."""
    order_id = await place(shop, items)

    async def stored() -> bool:
        return order_id in {o["order_id"] for o in (await latest(shop))["orders"]}

    await until(stored, what=f"order {order_id} stored")
    return order_id


async def test_latest_orders_newest_first_with_their_outcomes(shop: Shop) -> None:
    applied = await place_stored(shop, [{"product_id": "p-plenty", "quantity": 3}])
    rejected = await place_stored(shop, [{"product_id": "p-none", "quantity": 1}])
    last = await place_stored(shop, [{"product_id": "p-last", "quantity": 1}])

    async def settled() -> bool:
        body = await latest(shop)
        return len(body["orders"]) == 3 and all(o["outcome"] is not None for o in body["orders"])

    await until(settled, what="three orders with outcomes")
    body = await latest(shop)
    assert body["total"] == 3 and body["missing"] == [] and body["errors"] == {}
    assert [o["order_id"] for o in body["orders"]] == [last, rejected, applied]
    by_id = {o["order_id"]: o for o in body["orders"]}
    assert by_id[applied]["outcome"]["status"] == "applied"
    assert by_id[applied]["outcome"]["items"] == [{"product_id": "p-plenty", "quantity": 3, "remaining": 7}]
    assert by_id[applied]["items"] == [{"product_id": "p-plenty", "quantity": 3}]
    assert by_id[applied]["created_at"].endswith("Z") and by_id[applied]["received_at"] > 0
    assert by_id[rejected]["outcome"]["status"] == "rejected"
    assert "p-none" in by_id[rejected]["outcome"]["reason"]

    two = await latest(shop, limit=2)
    assert [o["order_id"] for o in two["orders"]] == [last, rejected] and two["total"] == 3


async def test_stock_page_flags_the_low_products_and_puts_the_sold_ones_first(shop: Shop) -> None:
    headers = shop.headers()
    first = (await shop.http.get("/inventory", params={"order": "product"}, headers=headers)).json()
    assert first["items"] == [
        {"product_id": "p-last", "stock": 1, "low": True},
        {"product_id": "p-none", "stock": 0, "low": True},
        {"product_id": "p-plenty", "stock": 10, "low": False},
    ]
    assert (first["total"], first["low"], first["threshold"]) == (3, 2, 2)

    order_id = await place(shop, [{"product_id": "p-plenty", "quantity": 9}])

    async def applied() -> bool:
        body = await latest(shop)
        return bool(body["orders"]) and body["orders"][0]["outcome"] is not None

    await until(applied, what=f"order {order_id} applied")
    recent = (await shop.http.get("/inventory", headers=headers)).json()  # order=recent is the default
    assert recent["order"] == "recent"
    assert recent["items"][0] == {"product_id": "p-plenty", "stock": 1, "low": True}
    assert [i["product_id"] for i in recent["items"][1:]] == ["p-last", "p-none"]  # never sold: by id
    assert recent["low"] == 3

    fewest = (await shop.http.get("/inventory", params={"order": "stock", "limit": 2}, headers=headers)).json()
    assert [(i["product_id"], i["stock"]) for i in fewest["items"]] == [("p-none", 0), ("p-last", 1)]
    page2 = (await shop.http.get("/inventory", params={"order": "product", "offset": 2}, headers=headers)).json()
    assert [i["product_id"] for i in page2["items"]] == ["p-plenty"] and page2["offset"] == 2
    low = (await shop.http.get("/inventory", params={"low_only": "true", "order": "stock"}, headers=headers)).json()
    assert [i["product_id"] for i in low["items"]] == ["p-none", "p-last", "p-plenty"]
    assert low["total"] == 3 and all(i["low"] for i in low["items"])


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/orders", {"limit": 0}, "limit"),
        ("/orders", {"limit": 1001}, "limit"),
        ("/orders", {"limit": "many"}, "limit"),
        ("/inventory", {"limit": 0}, "limit"),
        ("/inventory", {"offset": -1}, "offset"),
        ("/inventory", {"order": "random"}, "order"),
        ("/inventory", {"low_only": "perhaps"}, "low_only"),
    ],
)
async def test_a_bad_parameter_is_a_422_naming_it(shop: Shop, path: str, params: dict[str, Any], field: str) -> None:
    response = await shop.http.get(path, params=params, headers=shop.headers())
    assert response.status_code == 422, response.text
    assert response.json()["message"].startswith(f"query.{field}: "), response.json()


async def test_the_routes_need_their_scopes(shop: Shop) -> None:
    assert (await shop.http.get("/orders")).status_code == 401
    response = await shop.http.get("/inventory", headers=shop.headers("bob"))  # orders:read only
    assert response.status_code == 403 and "inventory:read" in response.json()["detail"]
    response = await shop.http.get("/orders", headers=shop.headers("carol"))
    assert response.status_code == 403 and "orders:read" in response.json()["detail"]


async def test_without_the_inventory_the_orders_are_listed_without_outcomes(
    memory_broker: InMemoryBroker, tmp_path: Path
) -> None:
    async with start_shop(memory_broker, tmp_path, settings=GatewaySettings(call_timeout_s=0.5)) as shop:
        order_id = await place(shop, [{"product_id": "p-plenty", "quantity": 1}])

        async def stored() -> bool:
            return bool((await latest(shop))["orders"])

        await until(stored, what="the order stored")
        await shop.inventory_svc.stop()
        body = await latest(shop)
        assert [o["order_id"] for o in body["orders"]] == [order_id]
        assert body["orders"][0]["outcome"] is None
        assert body["missing"] == ["inventory"] and body["errors"] == {"inventory": "timed out after 0.5 s"}
        response = await shop.http.get("/inventory", headers=shop.headers())
        assert response.status_code == 504 and "inventory.list_stock" in response.json()["detail"]


async def test_the_store_pages_and_outcomes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seed = {"a": 5, "b": 1, "c": 3}
    async with InventoryStore(tmp_path / "inv.db", seed=seed) as store:
        await store.reserve(Order("o1", (OrderItem("c", 1),)))
        await store.reserve(Order("o2", (OrderItem("a", 1), OrderItem("b", 1))))
        await store.reserve(Order("o3", (OrderItem("b", 1),)))  # rejected: b is at 0 now
        rows, total, low = await store.stock_page(threshold=2)
        # o2 (a, b) was the last applied order, then o1 (c); o3 was rejected and moves nothing
        assert rows == [("a", 4), ("b", 0), ("c", 2)] and (total, low) == (3, 1)
        rows, total, low = await store.stock_page(threshold=3, order="stock", low_only=True)
        assert rows == [("b", 0), ("c", 2)] and (total, low) == (2, 2)
        outcomes = await store.outcomes(["o3", "o1", "nope", "o1"])
        assert list(outcomes) == ["o3", "o1", "nope"]
        assert outcomes["o3"] is not None and outcomes["o3"].status == "rejected"
        assert outcomes["o1"] is not None and outcomes["o1"].items == (
            {"product_id": "c", "quantity": 1, "remaining": 2},
        )
        assert outcomes["nope"] is None
        rows, _, _ = await store.stock_page(threshold=2, offset=1, limit=1)
        assert rows == [("b", 0)]
        # "recent" reads the latest RECENT_SCAN outcomes only: with 2, o3 (rejected) and o2
        monkeypatch.setattr(inventory, "RECENT_SCAN", 2)
        await store.reserve(Order("o4", (OrderItem("c", 1),)))  # now o4, o3: c first, then a, b by id
        rows, _, _ = await store.stock_page(threshold=2)
        assert [p for p, _ in rows] == ["c", "a", "b"]
        await store.reserve(Order("o5", (OrderItem("x", 1),)))  # rejected: only o5 and o4 are read
        await store.reserve(Order("o6", (OrderItem("x", 1),)))  # o6 and o5, both rejected: by id
        rows, _, _ = await store.stock_page(threshold=2)
        assert [p for p, _ in rows] == ["a", "b", "c"]
        with pytest.raises(ValueError):
            await store.stock_page(threshold=2, limit=0)


async def test_the_gateway_serves_the_chart_library_from_the_plotly_package(
    memory_broker: InMemoryBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import plotly

    shipped = (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()
    static = tmp_path / "static"
    static.mkdir()
    (static / "index.html").write_text("<!doctype html><title>x</title>")
    async with start_shop(memory_broker, tmp_path / "a", static_dir=static) as shop:
        response = await shop.http.get("/vendor/plotly.min.js")  # no token: a public library
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/javascript")
        assert response.content == shipped and b"plotly.js v" in shipped[:200]
        assert "max-age" in response.headers["cache-control"]

    monkeypatch.setattr(_dashboard, "plotly_js", lambda: None)
    async with start_shop(memory_broker, tmp_path / "b", static_dir=static) as shop:
        response = await shop.http.get("/vendor/plotly.min.js")
        assert response.status_code == 404
        assert response.json() == {"detail": "plotly.js is not installed: pip install plotly"}


async def test_without_a_dashboard_there_is_no_chart_library(shop: Shop) -> None:
    assert (await shop.http.get("/vendor/plotly.min.js")).status_code == 404


async def test_the_patterns_refuse_a_malformed_payload_and_take_the_defaults(shop: Shop) -> None:
    for pattern, payload in [
        ("inventory.list_stock", {"limit": 0}),
        ("inventory.list_stock", {"order": "random"}),
        ("inventory.get_outcomes", {"order_ids": "o-1"}),
        ("orders.latest", {"limit": "50"}),  # strict: a string is not a number
    ]:
        with pytest.raises(RemoteError) as caught:
            await shop.client.send(pattern, payload, timeout=STEP)
        assert caught.value.remote_type == "ValidationError", (pattern, caught.value)
    page = await shop.client.send("inventory.list_stock", {}, timeout=STEP)
    assert (page["limit"], page["offset"], page["order"], page["total"]) == (100, 0, "recent", 3)
    assert await shop.client.send("orders.latest", {}, timeout=STEP) == {"orders": [], "total": 0}
    assert await shop.client.send("inventory.get_outcomes", {"order_ids": []}, timeout=STEP) == {}
