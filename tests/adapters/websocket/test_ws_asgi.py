"""StarletteTransport: a Starlette app served by a real uvicorn on loopback accepts ``/ws`` and
attaches the connection to a WebSocketServer's hub, beside clients of the server's own listener.

The app does what the API gateway will do: check a token (4401 when missing or unknown),
accept, then ``server.serve(StarletteTransport(websocket), allowed_channels=...)`` (4403).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import uvicorn
from starlette.applications import Starlette  # noqa: E402
from starlette.routing import WebSocketRoute  # noqa: E402
from starlette.websockets import WebSocket  # noqa: E402
from websockets.asyncio.client import connect as raw_connect
from websockets.exceptions import ConnectionClosed
from wsframes import read_until_pong, recv, subscribe

from reactive_services.adapters.websocket import (
    CLOSE_UNAUTHORIZED,
    Connection,
    StarletteTransport,
    WebSocketServer,
    connect,
)

pytestmark = pytest.mark.timeout(60)

STEP = 5.0
#: token -> channels it may read (None: any)
TOKENS: dict[str, frozenset[str] | None] = {"admin": None, "shop": frozenset({"orders", "inventory"})}


@dataclass
class Gateway:
    hub_server: WebSocketServer
    url: str  # ws://127.0.0.1:<uvicorn port>/ws
    errors: list[str] = field(default_factory=list)
    returned: list[int | None] = field(default_factory=list)


def make_app(gw_state: dict[str, Any], hub_server: WebSocketServer) -> Starlette:
    async def ws_endpoint(websocket: WebSocket) -> None:
        token = websocket.query_params.get("token", "")
        if token == "attach-before-accept":
            try:
                StarletteTransport(websocket)
            except RuntimeError as exc:
                gw_state["errors"].append(str(exc))
        await websocket.accept()
        if token not in TOKENS:
            await websocket.close(CLOSE_UNAUTHORIZED, "missing or invalid token")
            return
        scopes = TOKENS[token]
        transport = StarletteTransport(websocket, close_timeout=1.0)
        await hub_server.serve(transport, allowed_channels=None if scopes is None else scopes.__contains__)
        gw_state["returned"].append(transport.close_code)

    return Starlette(routes=[WebSocketRoute("/ws", ws_endpoint)])


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    hub_server = WebSocketServer(ping_interval=None, close_timeout=1.0, queue_size=32)
    await hub_server.start()  # its own listener too: both kinds of client share the hub
    state: dict[str, Any] = {"errors": [], "returned": []}
    config = uvicorn.Config(
        make_app(state, hub_server),
        host="127.0.0.1",
        port=0,
        ws="websockets-sansio",
        ws_ping_interval=None,
        # The hub encodes a notification once and writes the same bytes to every client;
        # per-message deflate would compress it again per client (and hide a stalled client
        # here: 64 KiB of "z" deflates to a few bytes). The gateway should turn it off too.
        ws_per_message_deflate=False,
        lifespan="off",
        log_level="warning",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        assert server.started, "uvicorn did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        gw = Gateway(hub_server, f"ws://127.0.0.1:{port}/ws")
        gw.errors, gw.returned = state["errors"], state["returned"]
        yield gw
    finally:
        await asyncio.wait_for(hub_server.stop(), STEP)
        server.should_exit = True
        await asyncio.wait_for(task, STEP)


async def test_uvicorn_clients_and_listener_clients_share_the_hub(gateway: Gateway) -> None:
    server = gateway.hub_server
    conns: list[Connection] = []
    server.connections.subscribe(conns.append)
    async with (
        raw_connect(gateway.url + "?token=admin", proxy=None) as via_uvicorn,
        raw_connect(server.url, proxy=None) as via_listener,
    ):
        for ws in (via_uvicorn, via_listener):
            assert await subscribe(ws, ["orders"]) == {"type": "subscribed", "channels": ["orders"]}
        assert server.subscribers("orders") == 2
        assert isinstance(conns[0].transport, StarletteTransport)
        assert conns[0].remote_address == via_uvicorn.local_address[:2]

        for seq in range(20):
            server.hub.on_next(("orders", {"seq": seq}))
        server.hub.on_next(("inventory", "not subscribed"))
        for ws in (via_uvicorn, via_listener):
            frames = await read_until_pong(ws)
            assert [f["event"]["seq"] for f in frames] == list(range(20))

        # Same protocol: errors keep the connection open, unsubscribe works.
        await via_uvicorn.send("not json")
        assert (await recv(via_uvicorn))["type"] == "error"
        await via_uvicorn.send('{"op": "unsubscribe", "channels": ["orders"]}')
        assert await recv(via_uvicorn) == {"type": "subscribed", "channels": []}
        server.hub.on_next(("orders", {"seq": 20}))
        assert await read_until_pong(via_uvicorn) == []
        assert server.hub.delivered == 41
    for _ in range(200):
        if gateway.returned:
            break
        await asyncio.sleep(0.01)
    assert gateway.returned == [1000]  # serve() returned when the client closed
    assert server.clients == []


async def test_missing_token_4401_and_refused_channel_4403(gateway: Gateway) -> None:
    async with raw_connect(gateway.url, proxy=None) as ws:
        with pytest.raises(ConnectionClosed) as info:
            await recv(ws)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4401, "missing or invalid token")

    async with raw_connect(gateway.url + "?token=shop", proxy=None) as ws:
        assert (await subscribe(ws, ["orders", "inventory"]))["channels"] == ["inventory", "orders"]
        await ws.send('{"op": "subscribe", "channels": ["orders", "payments"]}')
        with pytest.raises(ConnectionClosed) as info:
            await recv(ws)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4403, "channel not allowed: 'payments'")
    assert gateway.hub_server.subscribers("orders") == 0


async def test_attaching_before_accept_is_refused(gateway: Gateway) -> None:
    async with raw_connect(gateway.url + "?token=attach-before-accept", proxy=None) as ws:
        with pytest.raises(ConnectionClosed):
            await recv(ws)
    assert gateway.errors and "accept() the websocket" in gateway.errors[0]


async def test_hub_completion_closes_uvicorn_clients_with_1001(gateway: Gateway) -> None:
    server = gateway.hub_server
    done: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
    frames: list[Any] = []
    connect(gateway.url + "?token=admin", subscribe=["orders"], events_only=True).subscribe(
        on_next=frames.append,
        on_completed=lambda: done.done() or done.set_result(None),
        on_error=lambda e: done.done() or done.set_result(e),
    )
    while server.subscribers("orders") == 0:
        await asyncio.sleep(0.01)
    for seq in range(5):
        server.hub.on_next(("orders", seq))
    server.hub.on_completed()
    assert await asyncio.wait_for(done, STEP) is None  # closed 1000/1001 after the flush
    assert [f["event"] for f in frames] == list(range(5))
    await asyncio.wait_for(server.hub.wait_closed(), STEP)


async def test_a_stalled_uvicorn_client_is_closed_and_serve_returns(gateway: Gateway) -> None:
    """The close frame cannot be written to a client that does not read (uvicorn waits for
    its transport to be writable): close() gives up after close_timeout and serve() returns,
    so the hub forgets the client while a reading one gets everything."""
    server = gateway.hub_server
    pad = "z" * 64 * 1024
    slow = await raw_connect(gateway.url + "?token=admin", proxy=None, max_queue=1, ping_interval=None)
    fast = await raw_connect(gateway.url + "?token=admin", proxy=None)
    try:
        await subscribe(slow, ["orders"])
        await subscribe(fast, ["orders"])
        slow_conn, fast_conn = server.clients
        seqs: list[int] = []

        async def read_fast() -> None:
            async for data in fast:
                frame = orjson.loads(data)
                if frame["type"] == "event":
                    seqs.append(frame["event"]["seq"])

        reader = asyncio.create_task(read_fast())
        sent = 0
        while server.hub.slow_clients_closed == 0:
            assert sent < 400, "the stalled client was never closed"
            server.hub.on_next(("orders", {"seq": sent, "pad": pad}))
            sent += 1
            assert slow_conn.queued <= server.queue_size
            while fast_conn.queued > 2 or len(seqs) < sent - 2:
                await asyncio.sleep(0.001)
        for _ in range(100):  # close_timeout is 1 s
            if slow_conn not in server.clients:
                break
            await asyncio.sleep(0.05)
        assert slow_conn not in server.clients and fast_conn in server.clients
        assert gateway.returned == [1013]
        while len(seqs) < sent:
            await asyncio.sleep(0.01)
        assert seqs == list(range(sent))
        await fast.close()
        await asyncio.wait_for(reader, STEP)
    finally:
        slow.transport.abort()
        await fast.close()
