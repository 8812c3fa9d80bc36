"""``/ws`` on the gateway: the token checked at the handshake (4401), channels allowed by the
token's scopes (4403), and events of an order placed over HTTP reaching a real websocket client."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from gatewayshop import STEP, Shop, start_shop, until
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.examples.shop.auth import CHANNEL_SCOPES

pytestmark = pytest.mark.timeout(60)


async def recv(ws: ClientConnection) -> dict[str, Any]:
    return orjson.loads(await asyncio.wait_for(ws.recv(), STEP))


async def closed_with(ws: ClientConnection) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as info:
        await recv(ws)
    assert info.value.rcvd is not None
    return info.value.rcvd.code, info.value.rcvd.reason


async def subscribe(ws: ClientConnection, channels: list[str]) -> None:
    await ws.send(orjson.dumps({"op": "subscribe", "channels": channels}).decode())


@pytest.mark.parametrize(
    "how, reason",
    [
        ("none", "unauthorized: missing token"),
        ("garbage", "unauthorized: malformed token"),
        ("expired", "unauthorized: token expired"),
    ],
)
async def test_no_or_a_bad_token_is_accepted_then_closed_4401(shop: Shop, how: str, reason: str) -> None:
    url = shop.ws_url
    if how == "garbage":
        url += "?token=not-a-jwt"
    elif how == "expired":
        url += "?token=" + shop.token("carol", ttl_s=60, now=time.time() - 3600)
    async with ws_connect(url, proxy=None) as ws:
        assert await closed_with(ws) == (4401, reason)
    assert shop.ws_server.clients == []


async def test_a_channel_the_scopes_do_not_allow_is_closed_4403(shop: Shop) -> None:
    headers = {"Authorization": f"Bearer {shop.token('alice')}"}  # notifications:read, no logs:read
    async with ws_connect(shop.ws_url, proxy=None, additional_headers=headers) as ws:
        await subscribe(ws, ["orders", "stock"])
        assert await recv(ws) == {"type": "subscribed", "channels": ["orders", "stock"]}
        await subscribe(ws, ["alerts"])
        assert await closed_with(ws) == (4403, "channel not allowed: 'alerts'")


async def test_a_channel_that_does_not_exist_is_an_error_frame_listing_the_channels_the_token_may_use(
    shop: Shop,
) -> None:
    headers = {"Authorization": f"Bearer {shop.token('alice')}"}  # notifications:read, no logs:read
    usable = sorted(c for c, scope in CHANNEL_SCOPES.items() if scope == "notifications:read")
    async with ws_connect(shop.ws_url, proxy=None, additional_headers=headers) as ws:
        await subscribe(ws, ["orders", "ordres"])  # a typo: the subscribe is rejected whole
        error = await recv(ws)
        assert error == {
            "type": "error",
            "error": f"unknown channel 'ordres'; the channels you may subscribe to: {', '.join(usable)}",
        }
        assert "alerts" not in error["error"]  # a channel this token may not use is not offered
        await subscribe(ws, ["orders"])  # the connection stayed open
        assert await recv(ws) == {"type": "subscribed", "channels": ["orders"]}


async def test_a_good_token_receives_the_events_of_an_order_placed_over_http(shop: Shop) -> None:
    headers = {"Authorization": f"Bearer {shop.token('alice')}"}
    carol = shop.token("carol")  # the query-parameter form, as a browser would connect
    async with (
        ws_connect(shop.ws_url, proxy=None, additional_headers=headers) as by_header,
        ws_connect(f"{shop.ws_url}?token={carol}", proxy=None) as by_query,
    ):
        await subscribe(by_header, ["orders", "inventory"])
        assert (await recv(by_header))["channels"] == ["inventory", "orders"]
        await subscribe(by_query, ["orders", "alerts"])
        assert (await recv(by_query))["channels"] == ["alerts", "orders"]

        response = await shop.http.post(
            "/orders", json={"items": [{"product_id": "p-plenty", "quantity": 3}]}, headers=shop.headers()
        )
        assert response.status_code == 202
        order_id = response.json()["order_id"]

        frames = [await recv(by_header), await recv(by_header)]
        by_topic = {f["event"]["topic"]: f for f in frames}
        assert set(by_topic) == {"order.created", "inventory.updated"}
        assert by_topic["order.created"]["channel"] == "orders"
        assert by_topic["order.created"]["event"]["data"]["order_id"] == order_id
        assert by_topic["inventory.updated"]["event"]["data"]["items"][0]["remaining"] == 7
        only = await recv(by_query)
        assert (only["channel"], only["event"]["topic"]) == ("orders", "order.created")
    await until(lambda: shop.ws_server.clients == [], what="the connections to end")


async def test_the_connection_is_closed_4401_when_the_token_expires(shop: Shop) -> None:
    # a token valid for 3 s more (the config's 5 s leeway included): time to subscribe on a loaded
    # machine (1 s was not always enough: it expired before the subscription was answered)
    token = shop.token("carol", ttl_s=60, now=time.time() - 60 - shop.jwt.leeway_s + 3.0)
    async with ws_connect(f"{shop.ws_url}?token={token}", proxy=None) as ws:
        await subscribe(ws, ["orders"])
        assert (await recv(ws))["channels"] == ["orders"]
        assert await closed_with(ws) == (4401, "unauthorized: token expired")


async def test_a_client_cut_off_resumes_through_the_gateway_from_its_cursor(
    memory_broker: InMemoryBroker, tmp_path: Path
) -> None:
    async with start_shop(memory_broker, tmp_path, resumable=True) as shop:
        headers = {"Authorization": f"Bearer {shop.token('alice')}"}

        async def order() -> str:
            response = await shop.http.post(
                "/orders", json={"items": [{"product_id": "p-plenty", "quantity": 1}]}, headers=shop.headers()
            )
            assert response.status_code == 202
            return str(response.json()["order_id"])

        async with ws_connect(shop.ws_url, proxy=None, additional_headers=headers) as ws:
            await subscribe(ws, ["orders"])
            assert "cursor" in await recv(ws)
            first = await order()
            frame = await recv(ws)
            assert frame["event"]["data"]["order_id"] == first
            cursor = frame["cursor"]
        missed = [await order(), await order()]
        await until(lambda: shop.ws_server.hub.published["orders"] == 3, what="the missed events fanned out")
        async with ws_connect(shop.ws_url, proxy=None, additional_headers=headers) as ws:
            await ws.send(orjson.dumps({"op": "subscribe", "channels": ["orders"], "since": cursor}).decode())
            assert await recv(ws) == {"type": "subscribed", "channels": ["orders"]}
            frames = [await recv(ws), await recv(ws)]
            assert sorted(f["event"]["data"]["order_id"] for f in frames) == sorted(missed)
            assert {f["event"]["topic"] for f in frames} == {"order.created"}
            await ws.send('{"op": "ping"}')
            assert await recv(ws) == {"type": "pong"}  # nothing more: no duplicate
            latest = await order()  # then live
            assert (await recv(ws))["event"]["data"]["order_id"] == latest


async def test_a_frame_over_the_servers_size_is_closed_1009(shop: Shop) -> None:
    # the gateway's websocket is served by an ASGI server (16 MiB frames by default); the
    # notification server's max_message_size (64 KiB) holds there as on its own listener
    headers = {"Authorization": f"Bearer {shop.token('alice')}"}
    async with ws_connect(shop.ws_url, proxy=None, additional_headers=headers, max_size=None) as ws:
        await subscribe(ws, ["orders"])
        assert (await recv(ws))["type"] == "subscribed"
        await ws.send('{"op": "ping", "pad": "' + "x" * (70 * 1024) + '"}')
        code, reason = await closed_with(ws)
        assert code == 1009 and "65536" in reason, (code, reason)
