"""The gateway's HTTP surface: validation (422), body limits (413), health, readiness, OpenAPI,
metrics and the static dashboard, over real HTTP to uvicorn."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gatewayshop import Shop, serve_app, start_shop, stop_app

from reactive_services import ClientProxy
from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.auth import JwtConfig
from reactive_services.errors import ConfigError
from reactive_services.examples.shop.gateway import GatewaySettings, create_app

pytestmark = pytest.mark.timeout(60)


# --------------------------------------------------------------------------- 422


@pytest.mark.parametrize(
    "body, path, loc",
    [
        ({"items": [{"product_id": "p", "quantity": 0}]}, "items[0].quantity", ["body", "items", 0, "quantity"]),
        (
            {"items": [{"product_id": "p", "quantity": 1}, {"product_id": "", "quantity": 1}]},
            "items[1].product_id",
            ["body", "items", 1, "product_id"],
        ),
        ({"items": [{"product_id": "   ", "quantity": 1}]}, "items[0].product_id", ["body", "items", 0, "product_id"]),
        ({"items": [{"product_id": "p", "quantity": "2"}]}, "items[0].quantity", ["body", "items", 0, "quantity"]),
        ({"items": [{"product_id": "p", "quantity": True}]}, "items[0].quantity", ["body", "items", 0, "quantity"]),
        ({"items": []}, "items", ["body", "items"]),
        ({}, "items", ["body", "items"]),
        ({"items": [{"product_id": "p", "quantity": 1}], "customer_id": ""}, "customer_id", ["body", "customer_id"]),
        ({"items": [{"product_id": "p", "quantity": 1}], "price": 3}, "price", ["body", "price"]),
        ({"items": [{"product_id": "p", "quantity": 1, "note": "x"}]}, "items[0].note", ["body", "items", 0, "note"]),
        ({"items": [{"product_id": "p", "quantity": 10**9}]}, "items[0].quantity", ["body", "items", 0, "quantity"]),
        ({"items": [{"product_id": f"p{i}", "quantity": 1} for i in range(101)]}, "items", ["body", "items"]),
    ],
)
async def test_a_malformed_order_is_422_naming_the_field_path(
    shop: Shop, body: dict[str, Any], path: str, loc: list[Any]
) -> None:
    response = await shop.http.post("/orders", json=body, headers=shop.headers())
    assert response.status_code == 422, response.text
    detail = response.json()
    assert detail["message"].startswith(f"{path}: "), detail["message"]
    assert [e["loc"] for e in detail["detail"]] == [loc]
    assert shop.client.emitted == 0  # nothing was published


async def test_a_body_that_is_not_json_is_422(shop: Shop) -> None:
    response = await shop.http.post(
        "/orders", content=b"{not json", headers={**shop.headers(), "Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"
    # says what is wrong and where, not "[1]: JSON decode error"
    assert (
        response.json()["message"]
        == "body (at character 1): invalid JSON (Expecting property name enclosed in double quotes)"
    )


# --------------------------------------------------------------------------- 413


def big_order(size: int) -> bytes:
    """A valid order JSON of about ``size`` bytes (a long customer id would be refused: 256 chars)."""
    items = []
    body = b""
    while len(body) < size:
        items.append(f'{{"product_id": "p-{len(items):06d}", "quantity": 1}}')
        body = ('{"items": [' + ", ".join(items) + "]}").encode()
    return body


async def test_a_body_over_the_limit_is_413_by_content_length(memory_broker: Any, tmp_path: Path) -> None:
    async with start_shop(memory_broker, tmp_path, settings=GatewaySettings(max_body_bytes=4096)) as shop:
        headers = {**shop.headers(), "Content-Type": "application/json"}
        response = await shop.http.post("/orders", content=b" " * 5000, headers=headers)
        assert response.status_code == 413
        assert response.json() == {"detail": "request body too large: at most 4096 bytes"}
        # a body at the limit goes through, to validation (no items: 422, not 413)
        at_limit = b'{"items": []}'.ljust(4096)
        response = await shop.http.post("/orders", content=at_limit, headers=headers)
        assert response.status_code == 422
        # the connection was closed after the 413; new requests still work
        response = await shop.http.get("/healthz")
        assert response.status_code == 200


async def test_a_streamed_body_over_the_limit_is_413(memory_broker: Any, tmp_path: Path) -> None:
    async with start_shop(memory_broker, tmp_path, settings=GatewaySettings(max_body_bytes=4096)) as shop:
        sent: list[int] = []

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                sent.append(1000)
                yield b" " * 1000

        headers = {**shop.headers(), "Content-Type": "application/json"}
        response = await shop.http.post("/orders", content=chunks(), headers=headers)  # chunked: no Content-Length
        assert response.status_code == 413
        assert response.json() == {"detail": "request body too large: at most 4096 bytes"}
        assert shop.client.emitted == 0


async def test_the_default_limit_is_64_kib(shop: Shop) -> None:
    headers = {**shop.headers(), "Content-Type": "application/json"}
    response = await shop.http.post("/orders", content=big_order(70_000), headers=headers)
    assert response.status_code == 413
    response = await shop.http.post("/orders", content=big_order(3_000), headers=headers)
    assert response.status_code == 202


# --------------------------------------------------------------------------- health, readiness, OpenAPI


async def test_healthz_and_readyz(shop: Shop) -> None:
    assert (await shop.http.get("/healthz")).json() == {"status": "ok"}
    response = await shop.http.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"request_reply": True, "broker": True, "partitions_assigned": True},
        "error": None,
    }
    shop.ready["partitions_assigned"] = False
    response = await shop.http.get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "not ready"
    assert response.json()["checks"]["partitions_assigned"] is False
    assert (await shop.http.get("/healthz")).status_code == 200  # alive all the same
    # nested bools count too; other values are passed along
    shop.ready.update(partitions_assigned=True, services={"inventory": True, "auth": False}, note="x")
    response = await shop.http.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["services"] == {"inventory": True, "auth": False}
    shop.ready["services"]["auth"] = True
    response = await shop.http.get("/readyz")
    assert response.status_code == 200 and response.json()["checks"]["note"] == "x"


async def test_a_failing_or_slow_readiness_check_is_503(memory_broker: InMemoryBroker) -> None:
    async def failing() -> dict[str, Any]:
        raise RuntimeError("no broker")

    async def slow() -> dict[str, Any]:
        await asyncio.sleep(30)
        return {}

    jwt = JwtConfig.development()
    for readiness, error in ((failing, "RuntimeError: no broker"), (slow, "readiness check timed out")):
        client = ClientProxy(memory_broker)
        app = create_app(client=client, jwt=jwt, readiness=readiness, settings=GatewaySettings(readiness_timeout_s=0.2))
        server, task, url = await serve_app(app)
        try:
            async with httpx.AsyncClient(base_url=url) as http:
                response = await http.get("/readyz")
        finally:
            await stop_app(server, task)
            await client.close()
        assert response.status_code == 503
        assert response.json()["checks"]["readiness"] is False
        assert response.json()["error"] == error


async def test_openapi_lists_the_routes_and_the_bearer_scheme(shop: Shop) -> None:
    spec = (await shop.http.get("/openapi.json")).json()
    assert set(spec["paths"]) >= {
        "/orders",
        "/orders/{order_id}",
        "/inventory/{product_id}",
        "/auth/login",
        "/healthz",
        "/readyz",
    }
    assert spec["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A token from POST /auth/login: `Authorization: Bearer <token>`.",
    }
    assert spec["paths"]["/orders"]["post"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in spec["paths"]["/auth/login"]["post"]
    docs = await shop.http.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


# --------------------------------------------------------------------------- metrics, static files


class FakeMetrics:
    content_type = "text/plain; version=0.0.4; charset=utf-8"

    def __init__(self) -> None:
        self.observed: list[tuple[str, str, int]] = []

    def render(self) -> bytes:
        return b"# HELP requests\nrequests_total 3\n"

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        assert seconds >= 0
        self.observed.append((route, method, status))


async def test_metrics_are_served_and_every_request_is_observed_by_route(memory_broker: Any, tmp_path: Path) -> None:
    metrics = FakeMetrics()
    async with start_shop(memory_broker, tmp_path, metrics=metrics) as shop:
        response = await shop.http.get("/metrics")
        assert response.status_code == 200
        assert response.content == b"# HELP requests\nrequests_total 3\n"
        assert response.headers["content-type"] == FakeMetrics.content_type
        await shop.http.get("/inventory/p-plenty", headers=shop.headers())
        await shop.http.get("/inventory/p-unknown", headers=shop.headers())
        await shop.http.get("/no/such/route")
        await shop.http.post("/orders", content=b" " * 70_000, headers=shop.headers())
    assert metrics.observed == [
        ("/metrics", "GET", 200),
        ("/inventory/{product_id}", "GET", 200),
        ("/inventory/{product_id}", "GET", 404),
        ("<unmatched>", "GET", 404),
        ("<unmatched>", "POST", 413),
    ]


async def test_the_static_folder_is_served_at_the_root_after_the_api(memory_broker: Any, tmp_path: Path) -> None:
    static = tmp_path / "static"
    static.mkdir()
    (static / "index.html").write_text("<h1>shop dashboard</h1>")
    (static / "app.js").write_text("console.log('hi')")
    async with start_shop(memory_broker, tmp_path, static_dir=static) as shop:
        index = await shop.http.get("/")
        assert index.status_code == 200 and "shop dashboard" in index.text
        assert (await shop.http.get("/app.js")).text == "console.log('hi')"
        assert (await shop.http.get("/healthz")).json() == {"status": "ok"}  # API routes win
        assert (await shop.http.get("/inventory/p-plenty", headers=shop.headers())).status_code == 200
        assert (await shop.http.get("/missing.html")).status_code == 404


def test_bad_settings_and_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        GatewaySettings(call_timeout_s=0)
    assert info.value.key == "call_timeout_s"
    with pytest.raises(ConfigError) as info:
        GatewaySettings(max_body_bytes=0)
    assert info.value.key == "max_body_bytes"
    client = ClientProxy(InMemoryBroker())
    with pytest.raises(ConfigError) as info:
        create_app(client=client, jwt=JwtConfig.development(), hub=object())
    assert info.value.key == "hub"
    with pytest.raises(ConfigError) as info:
        create_app(client=client, jwt=JwtConfig.development(), static_dir=tmp_path / "nope")
    assert info.value.key == "static_dir"


async def test_a_client_expecting_100_continue_gets_413_without_sending_the_body(shop: Shop) -> None:
    host, port = shop.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            b"POST /orders HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\nExpect: 100-continue\r\n\r\n"
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)  # the server closes the connection
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 413 ")  # no "100 Continue" first
    assert b"request body too large: at most 65536 bytes" in answer
