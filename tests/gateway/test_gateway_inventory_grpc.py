"""The gateway asking the inventory over gRPC (``inventory_transport="grpc"``): real HTTP calls to
uvicorn, the inventory's gRPC API on a real grpc.aio server on 127.0.0.1 port 0, the rest of the
shop on the in-memory broker; and the settings that choose the transport, refused at start with
the offending key named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from gatewayshop import start_shop, until

from reactive_services.errors import ConfigError
from reactive_services.examples.shop.gateway import PATTERNS, GatewaySettings, create_app
from reactive_services.examples.shop.inventory_grpc import InventoryGrpcClient

pytestmark = pytest.mark.timeout(60)


async def test_stock_and_an_orders_outcome_come_over_grpc(memory_broker: Any, tmp_path: Path) -> None:
    async with start_shop(memory_broker, tmp_path, inventory_grpc=True) as shop:
        requests = shop.app.state.requests
        assert requests.grpc_patterns == set(InventoryGrpcClient.PATTERNS)
        assert isinstance(requests.grpc, InventoryGrpcClient)  # opened by the lifespan
        assert requests.grpc.target == shop.grpc_server.address  # type: ignore[union-attr]
        # the broker's reply consumers of the inventory's patterns are not started
        assert set(shop.app.state.warmup.patterns) == set(PATTERNS) - set(InventoryGrpcClient.PATTERNS)

        response = await shop.http.post(
            "/orders", json={"items": [{"product_id": "p-plenty", "quantity": 3}]}, headers=shop.headers()
        )
        assert response.status_code == 202, response.text
        order_id = response.json()["order_id"]
        # the inventory service consumes order.created from the broker and applies it
        await until(lambda: shop.inventory.applied == 1, what="the order applied")

        # from here on the inventory does not answer over the broker: only gRPC can
        await shop.inventory_svc.stop()
        stock = await shop.http.get("/inventory/p-plenty", headers=shop.headers())
        assert (stock.status_code, stock.json()) == (200, {"product_id": "p-plenty", "stock": 7})
        unknown = await shop.http.get("/inventory/p-unknown", headers=shop.headers())
        assert (unknown.status_code, unknown.json()) == (404, {"detail": "unknown product 'p-unknown'"})

        await until(lambda: shop.order_query.stored == 1, what="the order stored")
        view = await shop.http.get(f"/orders/{order_id}", headers=shop.headers())
        body = view.json()
        assert view.status_code == 200, body
        assert body["inventory"] == {
            "status": "applied",
            "items": [{"product_id": "p-plenty", "quantity": 3, "remaining": 7}],
            "reason": None,
        }
        assert "inventory" not in body["missing"] and "inventory" not in body["errors"]
        # an order the inventory has not processed: NOT_FOUND over gRPC is a null part, not missing
        other = await shop.http.get("/orders/o-unknown", headers=shop.headers())
        assert other.status_code == 404

        # the gRPC server gone: 503 for the single call, a missing part in the aggregation
        await shop.grpc_server.stop(0)  # type: ignore[union-attr]
        down = await shop.http.get("/inventory/p-plenty", headers=shop.headers())
        assert down.status_code == 503, down.text
        view = await shop.http.get(f"/orders/{order_id}", headers=shop.headers())
        assert view.status_code == 200
        assert view.json()["missing"] == ["inventory"]
        assert view.json()["errors"]["inventory"].startswith("BrokerUnavailableError: ")


async def test_by_default_the_inventory_is_asked_over_the_broker(memory_broker: Any, tmp_path: Path) -> None:
    async with start_shop(memory_broker, tmp_path) as shop:
        requests = shop.app.state.requests
        assert requests.grpc_patterns == frozenset() and requests.grpc is None
        assert set(shop.app.state.warmup.patterns) == set(PATTERNS)
        await shop.inventory_svc.stop()  # the only one answering inventory.get_stock
        response = await shop.http.get("/inventory/p-plenty", headers=shop.headers())
        assert response.status_code == 504


@pytest.mark.parametrize(
    "settings, key, message",
    [
        ({"inventory_transport": "grpc"}, "inventory_grpc_address", "needed with inventory_transport 'grpc'"),
        ({"inventory_transport": "http"}, "inventory_transport", "must be one of broker, grpc, got 'http'"),
        ({"inventory_transport": "GRPC", "inventory_grpc_address": "h:1"}, "inventory_transport", "got 'GRPC'"),
        ({"inventory_grpc_address": "127.0.0.1:50051"}, "inventory_grpc_address", "only used with"),
        ({"inventory_transport": "grpc", "inventory_grpc_address": "localhost"}, "inventory_grpc_address", "HOST:PORT"),
        ({"inventory_transport": "grpc", "inventory_grpc_address": ":50051"}, "inventory_grpc_address", "HOST:PORT"),
        ({"inventory_transport": "grpc", "inventory_grpc_address": "h:0"}, "inventory_grpc_address", "1..65535"),
        ({"inventory_transport": "grpc", "inventory_grpc_address": "h:65536"}, "inventory_grpc_address", "got 'h:"),
        ({"inventory_transport": "grpc", "inventory_grpc_address": "h:port"}, "inventory_grpc_address", "HOST:PORT"),
        ({"inventory_transport": "grpc", "inventory_grpc_address": "a b:1"}, "inventory_grpc_address", "HOST:PORT"),
        ({"inventory_transport": "grpc", "inventory_grpc_address": 50051}, "inventory_grpc_address", "got 50051"),
    ],
)
def test_bad_transport_settings_are_refused_naming_the_key(settings: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        GatewaySettings(**settings)
    assert refused.value.key == key
    assert message in str(refused.value)


@pytest.mark.parametrize("address", ["127.0.0.1:50051", "inventory.internal:1", "[::1]:65535", "my_host-2:8080"])
def test_good_grpc_addresses_are_accepted(address: str) -> None:
    settings = GatewaySettings(inventory_transport="grpc", inventory_grpc_address=address)
    assert settings.inventory_grpc_address == address


def test_the_app_opens_no_grpc_channel_before_its_lifespan(tmp_path: Path) -> None:
    from reactive_services import ClientProxy
    from reactive_services.adapters.memory import InMemoryBroker
    from reactive_services.auth import JwtConfig

    settings = GatewaySettings(inventory_transport="grpc", inventory_grpc_address="127.0.0.1:1")
    app = create_app(client=ClientProxy(InMemoryBroker()), jwt=JwtConfig.development(), settings=settings)
    assert app.state.requests.grpc is None  # built outside any event loop: the channel comes at startup
