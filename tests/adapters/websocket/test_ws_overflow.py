"""Overflow policies, channel authorization (4403) and the Transport seam, against real
websocket clients over loopback.

A "stalled" client is a websockets client with ``max_queue=1`` that never calls ``recv()``:
after one buffered message its transport stops reading the socket, the kernel buffers fill,
then the server's write buffer passes its high-water mark, the server's sender blocks in
``send`` and the client's queue fills.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as raw_connect
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed
from wsframes import read_until_pong, recv, subscribe

from reactive_services.adapters.websocket import (
    CLOSE_FORBIDDEN,
    Connection,
    Transport,
    WebSocketServer,
    WebSocketsTransport,
)
from reactive_services.errors import ConfigError, ConnectionClosedError

pytestmark = pytest.mark.timeout(60)

STEP = 5.0
PAD = "x" * 64 * 1024  # 64 KiB per event: a stalled client fills the pipes after a few MB


class Scenario:
    """A server with one stalled and one fast client, both subscribed to ``orders``; the fast
    one is read by a background task."""

    def __init__(self, server: WebSocketServer, slow: ClientConnection, fast: ClientConnection) -> None:
        self.server = server
        self.slow = slow
        self.fast = fast
        self.slow_conn, self.fast_conn = server.clients
        self.sent = 0
        self.fast_seqs: list[int] = []
        self.pongs: asyncio.Queue[None] = asyncio.Queue()
        self.max_write_buffer = 0
        self.reader = asyncio.create_task(self._read_fast())

    async def _read_fast(self) -> None:
        async for data in self.fast:
            frame = orjson.loads(data)
            if frame["type"] == "pong":
                self.pongs.put_nowait(None)
            else:
                self.fast_seqs.append(frame["event"]["seq"])

    async def publish(self) -> None:
        """One event, then wait while the fast client is more than 2 frames behind."""
        self.server.hub.on_next(("orders", {"seq": self.sent, "pad": PAD}))
        self.sent += 1
        transport = self.slow_conn.transport
        assert isinstance(transport, WebSocketsTransport)
        self.max_write_buffer = max(self.max_write_buffer, transport.write_buffer_size)
        assert self.slow_conn.queued <= self.server.queue_size
        await asyncio.sleep(0)
        while self.fast_conn.queued > 2 or len(self.fast_seqs) < self.sent - 2:
            await asyncio.sleep(0.001)

    async def read_fast(self) -> None:
        """Wait until the fast client has read everything sent so far (up to a pong)."""
        await self.fast.send('{"op": "ping"}')
        await asyncio.wait_for(self.pongs.get(), STEP * 2)

    async def read_slow(self, until_seq: int) -> list[int]:
        """What the stalled client gets once it reads again, up to event ``until_seq``."""
        seqs: list[int] = []
        while not seqs or seqs[-1] != until_seq:
            seqs.append((await recv(self.slow))["event"]["seq"])
        return seqs


@pytest.fixture
async def scenario(request: pytest.FixtureRequest) -> AsyncIterator[Scenario]:
    policy = request.param
    async with WebSocketServer(queue_size=8, overflow=policy, close_timeout=30, ping_interval=None) as server:
        slow = await raw_connect(server.url, proxy=None, max_queue=1, ping_interval=None)
        fast = await raw_connect(server.url, proxy=None)
        s = None
        try:
            await subscribe(slow, ["orders"])
            await subscribe(fast, ["orders"])
            s = Scenario(server, slow, fast)
            yield s
        finally:
            await fast.close()
            slow.transport.abort()
            if s is not None:
                await asyncio.wait_for(s.reader, STEP)


@pytest.mark.parametrize("scenario", ["close"], indirect=True)
async def test_close_policy_closes_the_stalled_client_1013_and_the_fast_one_gets_everything(
    scenario: Scenario,
) -> None:
    s, server = scenario, scenario.server
    while server.hub.slow_clients_closed == 0:
        assert s.sent < 400, "the stalled client was never closed"
        await s.publish()
    for _ in range(10):
        await s.publish()
    await s.read_fast()
    assert s.fast_seqs == list(range(s.sent))
    assert (server.hub.slow_clients_closed, server.slow_clients_closed) == (1, 1)
    assert server.hub.dropped == server.dropped == 0
    assert not s.slow_conn.is_open and s.fast_conn.is_open
    # The transport buffer never grew past the high-water mark plus one frame.
    assert s.max_write_buffer <= server.write_limit + len(PAD) + 100

    # Reading again, the stalled client gets what was in flight, then the 1013 close frame.
    got = 0
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await recv(s.slow)
            got += 1
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (1013, "slow consumer")
    assert 0 < got < s.sent
    assert server.hub.delivered == s.sent + got


@pytest.mark.parametrize("scenario", ["drop_oldest"], indirect=True)
async def test_drop_oldest_keeps_the_stalled_client_which_then_gets_the_newest_frames(
    scenario: Scenario,
) -> None:
    s, server = scenario, scenario.server
    while server.dropped == 0:
        assert s.sent < 400, "the stalled client's queue never overflowed"
        await s.publish()
    for _ in range(20):  # 20 more drops
        await s.publish()
    await s.read_fast()
    assert s.fast_seqs == list(range(s.sent))
    assert s.slow_conn.is_open and s.slow_conn.queued == server.queue_size == 8
    assert s.slow_conn.dropped == server.dropped == server.hub.dropped >= 21
    assert server.hub.slow_clients_closed == 0
    assert s.max_write_buffer <= server.write_limit + len(PAD) + 100

    # It reads again: the frames in flight (a contiguous prefix), then the newest 8.
    seqs = await s.read_slow(until_seq=s.sent - 1)
    in_flight = len(seqs) - 8
    assert in_flight > 0
    assert seqs == list(range(in_flight)) + list(range(s.sent - 8, s.sent))
    assert server.hub.dropped == s.sent - len(seqs)
    await asyncio.wait_for(server.hub.wait_idle(), STEP)
    assert server.hub.delivered == s.sent + len(seqs)

    # Still connected, and caught up: new events flow normally.
    server.hub.on_next(("orders", {"seq": s.sent}))
    assert [f["event"]["seq"] for f in await read_until_pong(s.slow)] == [s.sent]


@pytest.mark.parametrize("scenario", ["keep_latest"], indirect=True)
async def test_keep_latest_jumps_the_stalled_client_to_the_present(scenario: Scenario) -> None:
    s, server = scenario, scenario.server
    while server.dropped == 0:  # stop right after the first overflow: the queue is [latest]
        assert s.sent < 400, "the stalled client's queue never overflowed"
        await s.publish()
    assert s.slow_conn.queued == 1
    assert s.slow_conn.dropped == server.hub.dropped == server.queue_size == 8
    await s.read_fast()
    assert s.fast_seqs == list(range(s.sent))

    # It reads again: the frames in flight, then only the latest one.
    seqs = await s.read_slow(until_seq=s.sent - 1)
    in_flight = len(seqs) - 1
    assert in_flight > 0
    assert seqs == list(range(in_flight)) + [s.sent - 1]
    assert server.hub.dropped == s.sent - len(seqs) == 8
    assert s.slow_conn.is_open and server.hub.slow_clients_closed == 0

    # A second stall: again it only gets the newest frame of what it missed.
    before = s.sent
    while server.dropped == 8:
        await s.publish()
    for _ in range(3):  # the queue is now [latest - 3 .. latest]
        await s.publish()
    seqs = await s.read_slow(until_seq=s.sent - 1)
    assert seqs[-4:] == list(range(s.sent - 4, s.sent))
    assert seqs[:-4] == list(range(before, before + len(seqs) - 4))  # in flight
    assert server.hub.dropped == s.sent - before - len(seqs) + 8


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"queue_size": 0}, "queue_size"),
        ({"overflow": "drop_newest"}, "overflow"),
        ({"close_timeout": 0}, "close_timeout"),
        ({"write_limit": -1}, "write_limit"),
        ({"overflow_close_code": 999}, "overflow_close_code"),
    ],
)
def test_configuration_is_validated_at_construction(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name) as info:
        WebSocketServer(**kwargs)
    assert isinstance(info.value, ConfigError) and info.value.key == name


def test_overflow_policies_are_accepted() -> None:
    for policy in ("close", "drop_oldest", "keep_latest"):
        assert WebSocketServer(overflow=policy).overflow == policy


# -- the Transport seam: serve() a connection accepted by another websockets server ----------


class Gateway:
    """A plain websockets server that hands each connection to ``hub_server.serve`` with
    ``allowed_channels``: what the API gateway does with its own ``/ws`` route."""

    def __init__(self, hub_server: WebSocketServer, allowed: Any) -> None:
        self.hub_server = hub_server
        self.allowed = allowed
        self.returned: list[int | None] = []

    async def handler(self, ws: ServerConnection) -> None:
        transport = WebSocketsTransport(ws, close_timeout=2.0)
        await self.hub_server.serve(transport, allowed_channels=self.allowed)
        self.returned.append(transport.close_code)


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[Gateway, str]]:
    hub_server = WebSocketServer(ping_interval=None)  # never started: no listener of its own

    def allowed(channel: str) -> bool:
        if channel == "boom":
            raise RuntimeError("scope lookup failed")
        return channel.startswith("public.")

    gw = Gateway(hub_server, allowed)
    async with ws_serve(gw.handler, "127.0.0.1", 0) as listener:
        yield gw, f"ws://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
        await hub_server.stop()


async def test_serve_runs_the_protocol_on_an_external_connection(gateway: tuple[Gateway, str]) -> None:
    gw, url = gateway
    server = gw.hub_server
    async with raw_connect(url, proxy=None) as ws:
        assert await subscribe(ws, ["public.a", "public.b"]) == {
            "type": "subscribed",
            "channels": ["public.a", "public.b"],
        }
        assert isinstance(server.clients[0].transport, Transport)
        server.hub.on_next(("public.a", 1))
        server.hub.on_next(("other", 2))
        assert await read_until_pong(ws) == [{"type": "event", "channel": "public.a", "event": 1}]
        await ws.send("not json")
        assert (await recv(ws))["type"] == "error"
    for _ in range(100):
        if gw.returned:
            break
        await asyncio.sleep(0.01)
    assert gw.returned == [1000]  # serve() returned once the client closed
    assert server.clients == [] and server.subscribers("public.a") == 0


@pytest.mark.parametrize("refused", ["secret", "boom"])
async def test_a_refused_channel_closes_4403_naming_it(gateway: tuple[Gateway, str], refused: str) -> None:
    gw, url = gateway
    server = gw.hub_server
    outcomes: list[BaseException] = []
    server.connections.subscribe(lambda conn: conn.messages.subscribe(on_error=outcomes.append))
    async with raw_connect(url, proxy=None) as ws:
        await subscribe(ws, ["public.a"])
        await ws.send(orjson.dumps({"op": "subscribe", "channels": ["public.b", refused]}).decode())
        with pytest.raises(ConnectionClosed) as info:
            await recv(ws)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (CLOSE_FORBIDDEN, f"channel not allowed: '{refused}'")
    for _ in range(100):
        if outcomes:
            break
        await asyncio.sleep(0.01)
    assert isinstance(outcomes[0], ConnectionClosedError) and outcomes[0].code == 4403
    assert server.subscribers("public.b") == 0  # the refused subscribe was not applied


async def test_the_4403_reason_fits_a_close_frame(gateway: tuple[Gateway, str]) -> None:
    _, url = gateway
    name = "é" * 100  # 200 UTF-8 bytes: the reason is cut to 123 bytes
    async with raw_connect(url, proxy=None) as ws:
        await ws.send(orjson.dumps({"op": "subscribe", "channels": [name]}).decode())
        with pytest.raises(ConnectionClosed) as info:
            await recv(ws)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4403
    reason = info.value.rcvd.reason
    assert reason.startswith("channel not allowed: 'ééé") and reason.endswith("...")
    assert len(reason.encode()) <= 123


async def test_stop_closes_external_connections_and_waits_for_serve(gateway: tuple[Gateway, str]) -> None:
    gw, url = gateway
    conns: list[Connection] = []
    gw.hub_server.connections.subscribe(conns.append)
    async with raw_connect(url, proxy=None) as ws:
        await subscribe(ws, ["public.a"])
        await asyncio.wait_for(gw.hub_server.stop(), STEP)
        assert gw.hub_server.clients == []
        with pytest.raises(ConnectionClosed) as info:
            await recv(ws)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001
    # A connection handed over after stop() is closed at once with 1001.
    async with raw_connect(url, proxy=None) as ws:
        with pytest.raises(ConnectionClosed) as info:
            await recv(ws)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001
    assert len(conns) == 1
