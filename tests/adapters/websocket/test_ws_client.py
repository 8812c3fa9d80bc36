"""reactive_services.adapters.websocket.connect: the client Observable, against real websockets servers on loopback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import reactivex
from reactivex import operators as ops
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from reactive_services import testing
from reactive_services.adapters.websocket import WebSocketServer, connect
from reactive_services.errors import (
    ConnectionClosedError,
    DecodeError,
    ValidationError,
    WebSocketError,
)

pytestmark = pytest.mark.timeout(30)

STEP = 5.0
EVENT = '{"type": "event", "channel": "a", "event": 1}'


async def collect(observable: Any, timeout: float = STEP) -> tuple[list[Any], BaseException | None]:
    """Subscribe, wait for the end; return (items, error or None) (the kit's collect, unpacked)."""
    got = await testing.collect(observable, timeout=timeout)
    return got.items, got.error


class TinyServer:
    """A plain websockets server running ``handler``; records what each connection did."""

    def __init__(self, handler: Callable[[ServerConnection], Awaitable[None]], **kwargs: Any) -> None:
        self.handler = handler
        self.kwargs = kwargs
        self.close_codes: list[int | None] = []
        self.received: list[str | bytes] = []
        self.handled = 0
        self.server: Server | None = None

    async def _handle(self, ws: ServerConnection) -> None:
        self.handled += 1
        try:
            await self.handler(ws)
        finally:
            await ws.wait_closed()
            self.close_codes.append(ws.close_code)

    async def __aenter__(self) -> TinyServer:
        self.server = await serve(self._handle, "127.0.0.1", 0, **self.kwargs)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await asyncio.wait_for(self.server.wait_closed(), STEP)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"


def send_then_close(code: int, reason: str = "") -> Callable[[ServerConnection], Awaitable[None]]:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(EVENT)
        await ws.close(code, reason)

    return handler


@pytest.mark.parametrize("code", [1000, 1001])
async def test_completes_on_normal_close(code: int) -> None:
    async with TinyServer(send_then_close(code)) as tiny:
        frames, error = await collect(connect(tiny.url))
    assert error is None
    assert frames == [{"type": "event", "channel": "a", "event": 1}]


@pytest.mark.parametrize(("code", "reason"), [(1011, "boom"), (4000, ""), (1013, "slow consumer")])
async def test_errors_with_connection_closed_error_on_other_codes(code: int, reason: str) -> None:
    async with TinyServer(send_then_close(code, reason)) as tiny:
        frames, error = await collect(connect(tiny.url))
    assert frames == [{"type": "event", "channel": "a", "event": 1}]
    assert isinstance(error, ConnectionClosedError)
    assert (error.code, error.reason) == (code, reason)
    assert error.retriable


async def test_errors_with_1006_when_the_tcp_connection_drops() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(EVENT)
        ws.transport.abort()

    async with TinyServer(handler) as tiny:
        frames, error = await collect(connect(tiny.url))
    assert len(frames) == 1
    assert isinstance(error, ConnectionClosedError) and error.code == 1006


async def test_connection_refused_is_a_websocket_error() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    frames, error = await collect(connect(f"ws://127.0.0.1:{port}"))
    assert frames == []
    assert type(error) is WebSocketError
    assert isinstance(error.__cause__, OSError)


async def test_rejected_handshake_is_a_websocket_error() -> None:
    def reject(ws: ServerConnection, request: Request) -> Response:
        return ws.respond(403, "no\n")

    async with TinyServer(send_then_close(1000), process_request=reject) as tiny:
        frames, error = await collect(connect(tiny.url))
    assert frames == [] and type(error) is WebSocketError
    assert "403" in str(error)


async def test_open_timeout_is_a_websocket_error() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accept TCP, never answer the HTTP upgrade
        writer.close()

    tcp = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        port = tcp.sockets[0].getsockname()[1]
        frames, error = await collect(connect(f"ws://127.0.0.1:{port}", open_timeout=0.2))
    finally:
        tcp.close()
    assert frames == [] and type(error) is WebSocketError
    assert isinstance(error.__cause__, TimeoutError)


async def test_bad_url_is_a_websocket_error() -> None:
    frames, error = await collect(connect("http://127.0.0.1:1/"))
    assert type(error) is WebSocketError


async def test_invalid_subscribe_raises_at_once() -> None:
    with pytest.raises(ValidationError):
        connect("ws://127.0.0.1:1", subscribe=[""])
    with pytest.raises(ValidationError):
        connect("ws://127.0.0.1:1", subscribe=["x" * 101])


async def test_non_json_server_frame_is_a_decode_error() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("garbage")
        await ws.wait_closed()

    async with TinyServer(handler) as tiny:
        frames, error = await collect(connect(tiny.url))
        assert isinstance(error, DecodeError)
    assert tiny.close_codes == [1000]


async def test_frame_without_type_is_a_validation_error() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send('{"event": 1}')
        await ws.wait_closed()

    async with TinyServer(handler) as tiny:
        _, error = await collect(connect(tiny.url))
    assert isinstance(error, ValidationError)


async def test_is_cold_and_dispose_closes_with_1000() -> None:
    async def handler(ws: ServerConnection) -> None:
        for i in range(1000):
            await ws.send(f'{{"type": "event", "channel": "a", "event": {i}}}')
            await asyncio.sleep(0.001)
        await ws.close(1011, "should not be reached")

    async with TinyServer(handler) as tiny:
        source = connect(tiny.url)
        assert tiny.handled == 0  # cold: nothing happens before subscribing
        first, error = await collect(source.pipe(ops.take(3)))
        second, error2 = await collect(source.pipe(ops.take(2)))
        assert error is None and error2 is None
        assert [f["event"] for f in first] == [0, 1, 2]
        assert [f["event"] for f in second] == [0, 1]
        for _ in range(200):
            if len(tiny.close_codes) == 2:
                break
            await asyncio.sleep(0.01)
        assert tiny.handled == 2
        assert tiny.close_codes == [1000, 1000]


async def test_dispose_before_connected_emits_nothing() -> None:
    async with TinyServer(send_then_close(1011)) as tiny:
        events: list[Any] = []
        disposable = connect(tiny.url).subscribe(
            on_next=events.append, on_error=events.append, on_completed=lambda: events.append("done")
        )
        disposable.dispose()
        await asyncio.sleep(0.2)
    assert events == []


async def test_on_next_raising_goes_to_on_error() -> None:
    async with TinyServer(send_then_close(1000)) as tiny:

        def boom(frame: Any) -> None:
            raise KeyError("callback failed")

        done: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        connect(tiny.url).subscribe(on_next=boom, on_error=done.set_result)
        error = await asyncio.wait_for(done, STEP)
    assert isinstance(error, KeyError)


def test_subscribing_outside_an_event_loop_errors() -> None:
    errors: list[BaseException] = []
    connect("ws://127.0.0.1:1").subscribe(on_error=errors.append)
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)


@pytest.fixture
async def server() -> AsyncIterator[WebSocketServer]:
    async with WebSocketServer() as srv:
        yield srv


async def test_subscribe_option_and_events_only(server: WebSocketServer) -> None:
    all_frames = asyncio.create_task(collect(connect(server.url, subscribe=["orders", "inventory"])))
    events = asyncio.create_task(collect(connect(server.url, subscribe=["orders"], events_only=True)))
    while server.subscribers("orders") < 2:
        await asyncio.sleep(0.01)
    server.hub.on_next(("orders", {"id": 1}))
    server.hub.on_next(("inventory", {"sku": "x"}))
    server.hub.on_next(("shipping", {"ignored": True}))
    await asyncio.wait_for(server.hub.wait_idle(), STEP)
    await server.stop()
    frames, error = await all_frames
    assert error is None
    assert frames == [
        {"type": "subscribed", "channels": ["inventory", "orders"]},
        {"type": "event", "channel": "orders", "event": {"id": 1}},
        {"type": "event", "channel": "inventory", "event": {"sku": "x"}},
    ]
    only_events, error = await events
    assert error is None
    assert only_events == [{"type": "event", "channel": "orders", "event": {"id": 1}}]


async def test_works_in_a_pipeline_with_retry(server: WebSocketServer) -> None:
    """The Observable is cold, so retry reconnects after a ConnectionClosedError."""
    conns: list[Any] = []
    server.connections.subscribe(conns.append)
    attempts = 0

    def count_attempt() -> None:
        nonlocal attempts
        attempts += 1

    source = reactivex.defer(lambda _: (count_attempt(), connect(server.url, subscribe=["a"], events_only=True))[1])
    result = asyncio.create_task(collect(source.pipe(ops.retry(2), ops.take(1))))
    while len(conns) < 1 or server.subscribers("a") < 1:
        await asyncio.sleep(0.01)
    await conns[0].close(1011, "restart")
    while len(conns) < 2 or conns[1].channels != {"a"}:
        await asyncio.sleep(0.01)
    server.hub.on_next(("a", "after reconnect"))
    frames, error = await result
    assert error is None and attempts == 2
    assert frames == [{"type": "event", "channel": "a", "event": "after reconnect"}]
