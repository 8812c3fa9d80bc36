"""WebSocketServer + NotificationHub against real websocket clients over loopback."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import connect as raw_connect
from websockets.exceptions import ConnectionClosed
from wsframes import read_until_pong, recv, subscribe

from reactive_services import testing
from reactive_services.adapters.websocket import (
    ClientFrame,
    Connection,
    Notification,
    NotificationHub,
    WebSocketServer,
    connect,
)
from reactive_services.errors import ConfigError, ConnectionClosedError

pytestmark = pytest.mark.timeout(60)

STEP = 5.0  # seconds allowed for any single network step


@pytest.fixture
async def server() -> AsyncIterator[WebSocketServer]:
    async with WebSocketServer() as srv:
        yield srv


async def collect(observable: Any, timeout: float = STEP) -> tuple[list[Any], BaseException | None]:
    """Subscribe, wait for the end; return (items, error or None) (the kit's collect, unpacked)."""
    got = await testing.collect(observable, timeout=timeout)
    return got.items, got.error


def test_queue_size_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="queue_size"):
        WebSocketServer(queue_size=0)


def test_backlog_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="backlog"):
        WebSocketServer(backlog=0)


async def test_port_and_url_after_start() -> None:
    srv = WebSocketServer()
    with pytest.raises(RuntimeError):
        _ = srv.port
    async with srv:
        assert srv.port > 0
        assert srv.url == f"ws://127.0.0.1:{srv.port}"
        async with raw_connect(srv.url, proxy=None) as ws:
            assert (await read_until_pong(ws)) == []


async def test_each_client_receives_exactly_its_channels(server: WebSocketServer) -> None:
    wanted = {
        "a": ["orders"],
        "b": ["inventory"],
        "c": ["orders", "inventory"],
        "d": ["payments"],
    }
    published = {"orders": 7, "inventory": 5, "shipping": 3}
    clients = {name: await raw_connect(server.url, proxy=None) for name in wanted}
    try:
        for name, channels in wanted.items():
            reply = await subscribe(clients[name], channels)
            assert reply == {"type": "subscribed", "channels": sorted(channels)}
        assert server.subscribers("orders") == 2
        assert server.subscribers("inventory") == 2

        for channel, count in published.items():
            for seq in range(count):
                server.hub.on_next(Notification(channel, {"seq": seq, "channel": channel}))
        await asyncio.wait_for(server.hub.wait_idle(), STEP)

        expected_total = 0
        for name, channels in wanted.items():
            frames = await read_until_pong(clients[name])
            assert all(f["type"] == "event" for f in frames)
            for channel in published:
                seqs = [f["event"]["seq"] for f in frames if f["channel"] == channel]
                expected = list(range(published[channel])) if channel in channels else []
                assert seqs == expected, (name, channel)
                expected_total += len(expected)
            assert {f["channel"] for f in frames} <= set(channels)
        assert server.hub.published == published
        assert server.hub.delivered == expected_total == 24
        assert server.hub.slow_clients_closed == 0
    finally:
        for ws in clients.values():
            await ws.close()


async def test_tuples_are_accepted_and_events_encoded_once(
    server: WebSocketServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import reactive_services.adapters.websocket._hub as hub_module

    calls: list[str] = []
    real = hub_module.encode_event

    def counting(channel: str, event: Any) -> bytes:
        calls.append(channel)
        return real(channel, event)

    monkeypatch.setattr(hub_module, "encode_event", counting)
    clients = [await raw_connect(server.url, proxy=None) for _ in range(5)]
    try:
        for ws in clients:
            await subscribe(ws, ["orders"])
        server.hub.on_next(("orders", {"id": 1}))
        for ws in clients:
            assert await read_until_pong(ws) == [{"type": "event", "channel": "orders", "event": {"id": 1}}]
        assert calls == ["orders"]
    finally:
        for ws in clients:
            await ws.close()


async def test_unsubscribe_stops_delivery(server: WebSocketServer) -> None:
    async with raw_connect(server.url, proxy=None) as ws:
        assert (await subscribe(ws, ["a", "b"]))["channels"] == ["a", "b"]
        server.hub.on_next(("a", 1))
        server.hub.on_next(("b", 1))
        await ws.send('{"op": "unsubscribe", "channels": ["a", "never-subscribed"]}')
        frames = [await recv(ws) for _ in range(3)]
        assert frames == [
            {"type": "event", "channel": "a", "event": 1},
            {"type": "event", "channel": "b", "event": 1},
            {"type": "subscribed", "channels": ["b"]},
        ]
        assert server.subscribers("a") == 0
        server.hub.on_next(("a", 2))
        server.hub.on_next(("b", 2))
        assert await read_until_pong(ws) == [{"type": "event", "channel": "b", "event": 2}]
        assert server.hub.published == {"a": 2, "b": 2}
        assert server.hub.delivered == 3


async def test_bad_frames_get_error_frames_and_connection_stays_open(server: WebSocketServer) -> None:
    seen: list[ClientFrame] = []
    server.connections.subscribe(lambda conn: conn.messages.subscribe(seen.append))
    async with raw_connect(server.url, proxy=None) as ws:
        bad = [
            ("not json", "not JSON"),
            ("[1]", "JSON object"),
            ('{"op": "dance"}', "unknown op 'dance'"),
            ('{"op": "subscribe", "channels": "orders"}', "list of strings"),
            ('{"op": "subscribe", "channels": ["ok", 5]}', "list of strings"),
            ('{"op": "subscribe", "channels": [""]}', "non-empty"),
            ('{"op": "subscribe", "channels": ["' + "x" * 101 + '"]}', "at most 100"),
            ('{"op": "subscribe"}', "needs 'channels'"),
        ]
        for text, message in bad:
            await ws.send(text)
            frame = await recv(ws)
            assert frame["type"] == "error", text
            assert message in frame["error"], (text, frame)
        await ws.send(b"\xff binary garbage")
        assert (await recv(ws))["type"] == "error"

        # The per-connection limit counts channels already subscribed; a rejected subscribe
        # changes nothing.
        first = [f"c{i}" for i in range(60)]
        assert len((await subscribe(ws, first))["channels"]) == 60
        reply = await subscribe(ws, [f"d{i}" for i in range(41)])
        assert reply["type"] == "error"
        assert "too many channels" in reply["error"] and "at most 100" in reply["error"]
        assert len((await subscribe(ws, [f"d{i}" for i in range(40)]))["channels"]) == 100

        # Still open and working.
        assert await read_until_pong(ws) == []
        server.hub.on_next(("c0", "still here"))
        assert await read_until_pong(ws) == [{"type": "event", "channel": "c0", "event": "still here"}]
    # Only valid frames reach conn.messages.
    assert [f.op for f in seen] == ["subscribe", "subscribe", "ping", "ping"]


async def test_connections_and_messages(server: WebSocketServer) -> None:
    conns: list[Connection] = []
    outcomes: dict[int, Any] = {}
    frames: dict[int, list[ClientFrame]] = {}

    def on_connection(conn: Connection) -> None:
        conns.append(conn)
        frames[conn.id] = []
        conn.messages.subscribe(
            on_next=frames[conn.id].append,
            on_completed=lambda: outcomes.setdefault(conn.id, "completed"),
            on_error=lambda e: outcomes.setdefault(conn.id, e),
        )

    server.connections.subscribe(on_connection)
    ws1 = await raw_connect(server.url, proxy=None)
    ws2 = await raw_connect(server.url, proxy=None)
    await subscribe(ws1, ["orders"])
    await subscribe(ws2, ["inventory"])
    assert [c.id for c in conns] == [1, 2]
    assert conns[0].remote_address[:2] == ws1.local_address[:2]
    assert conns[0].channels == {"orders"}
    assert frames[1] == [ClientFrame("subscribe", ("orders",))]
    assert [c.id for c in server.clients] == [1, 2]

    assert conns[1].send({"hello": "you"})
    assert await recv(ws2) == {"hello": "you"}

    await ws1.close(1000)
    await ws2.close(4000, "app-specific")
    await asyncio.wait_for(ws2.wait_closed(), STEP)
    for _ in range(100):
        if len(outcomes) == 2:
            break
        await asyncio.sleep(0.01)
    assert outcomes[1] == "completed"
    assert isinstance(outcomes[2], ConnectionClosedError)
    assert (outcomes[2].code, outcomes[2].reason) == (4000, "app-specific")
    assert server.clients == []
    assert server.subscribers("orders") == 0


async def test_connection_close_from_server_side(server: WebSocketServer) -> None:
    conns: list[Connection] = []
    server.connections.subscribe(conns.append)
    async with raw_connect(server.url, proxy=None) as ws:
        await read_until_pong(ws)
        await conns[0].close(4001, "bye")
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), STEP)
        assert info.value.rcvd is not None
        assert (info.value.rcvd.code, info.value.rcvd.reason) == (4001, "bye")
        assert not conns[0].send("dropped")


async def test_slow_client_is_closed_1013_and_fast_client_gets_everything() -> None:
    payload = "x" * 64 * 1024  # 64 KiB per event, so a client that stops reading fills the pipes
    async with WebSocketServer(queue_size=8, close_timeout=30, ping_interval=None) as server:
        # The slow client: its websockets buffer holds one frame, then it stops reading the
        # socket (transport paused) because the test never calls recv() until the end.
        slow = await raw_connect(server.url, proxy=None, max_queue=1, ping_interval=None)
        fast = await raw_connect(server.url, proxy=None)
        await subscribe(slow, ["orders"])
        await subscribe(fast, ["orders"])
        fast_conn = server.clients[1]

        received: list[int] = []

        async def read_fast() -> None:
            while True:
                frame = await recv(fast)
                if frame["type"] == "pong":
                    return
                received.append(frame["event"]["seq"])

        reader = asyncio.create_task(read_fast())
        sent = 0

        async def publish() -> None:
            # At the pace of the fast client: never more than 2 frames queued for it.
            nonlocal sent
            server.hub.on_next(("orders", {"seq": sent, "pad": payload}))
            sent += 1
            while fast_conn.queued > 2:
                await asyncio.sleep(0.001)

        # Until the slow client overflows; 400 x 64 KiB (~25 MB) is well over what the
        # kernel socket buffers of a loopback connection hold.
        while server.hub.slow_clients_closed == 0:
            assert sent < 400, "the slow client was never closed"
            await publish()
        for _ in range(10):  # the fast client keeps receiving after the slow one was dropped
            await publish()
        await asyncio.wait_for(server.hub.wait_idle(), STEP * 2)
        await fast.send('{"op": "ping"}')
        await asyncio.wait_for(reader, STEP * 2)
        assert received == list(range(sent))
        assert server.hub.published == {"orders": sent}
        assert server.hub.slow_clients_closed == 1

        # The slow client now reads what was in flight, then the 1013 close frame.
        got = 0
        with pytest.raises(ConnectionClosed) as info:
            while True:
                await asyncio.wait_for(slow.recv(), STEP)
                got += 1
        assert info.value.rcvd is not None
        assert (info.value.rcvd.code, info.value.rcvd.reason) == (1013, "slow consumer")
        assert 0 < got < sent
        assert server.hub.delivered == sent + got  # every event written to a socket was counted
        assert fast_conn.is_open
        await fast.close()


async def test_hub_on_completed_flushes_then_closes_clients_with_1001(server: WebSocketServer) -> None:
    results: list[asyncio.Task[tuple[list[Any], BaseException | None]]] = []
    for channels in (["orders"], ["orders", "inventory"]):
        results.append(asyncio.create_task(collect(connect(server.url, subscribe=channels, events_only=True))))
    while server.subscribers("orders") < 2:
        await asyncio.sleep(0.01)
    for seq in range(50):
        server.hub.on_next(("orders", seq))
        server.hub.on_next(("inventory", seq))
    server.hub.on_completed()  # no wait_idle first: on_completed flushes the queues itself
    server.hub.on_next(("orders", "after completion is ignored"))
    await asyncio.wait_for(server.hub.wait_closed(), STEP)

    (only_orders, err1), (both, err2) = [await r for r in results]
    assert err1 is None and err2 is None  # completed, i.e. closed with 1000/1001
    assert [f["event"] for f in only_orders] == list(range(50))
    assert len(both) == 100
    assert server.hub.delivered == 150
    assert server.hub.published == {"orders": 50, "inventory": 50}


async def test_hub_close_code_is_1001(server: WebSocketServer) -> None:
    async with raw_connect(server.url, proxy=None) as ws:
        await subscribe(ws, ["a"])
        server.hub.on_error(RuntimeError("upstream failed"))
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), STEP)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001


async def test_separate_hub_on_the_same_server(server: WebSocketServer) -> None:
    hub = NotificationHub(server)
    async with raw_connect(server.url, proxy=None) as ws:
        await subscribe(ws, ["a"])
        hub.on_next(("a", 1))
        assert await read_until_pong(ws) == [{"type": "event", "channel": "a", "event": 1}]
        assert hub.delivered == 1 and server.hub.delivered == 0


async def test_hub_rejects_bad_values(server: WebSocketServer) -> None:
    with pytest.raises(TypeError, match="Notification or a"):
        server.hub.on_next(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="channel must be a str"):
        server.hub.on_next((1, "x"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        server.hub.on_next(("a", object()))
    assert server.hub.published == {}


async def test_on_next_from_another_thread(server: WebSocketServer) -> None:
    async with raw_connect(server.url, proxy=None) as ws:
        await subscribe(ws, ["t"])

        def publish() -> None:
            assert threading.current_thread() is not threading.main_thread()
            for i in range(20):
                server.hub.on_next(("t", i))

        await asyncio.get_running_loop().run_in_executor(None, publish)
        await asyncio.sleep(0)  # let the loop run the handed-over calls
        frames = [await recv(ws) for _ in range(20)]
        assert [f["event"] for f in frames] == list(range(20))


async def test_stop_closes_clients_with_1001_and_completes_connections() -> None:
    srv = WebSocketServer()
    await srv.start()
    completed = asyncio.Event()
    srv.connections.subscribe(on_completed=completed.set)
    task = asyncio.create_task(collect(connect(srv.url, subscribe=["a"]), timeout=STEP))
    while srv.subscribers("a") == 0:
        await asyncio.sleep(0.01)
    await asyncio.wait_for(srv.stop(), STEP)
    frames, error = await task
    assert error is None
    assert frames == [{"type": "subscribed", "channels": ["a"]}]
    assert completed.is_set()
    await srv.stop()  # idempotent


async def test_stop_is_bounded_by_close_timeout_for_a_client_that_never_reads() -> None:
    payload = "y" * 64 * 1024
    srv = WebSocketServer(queue_size=10_000, close_timeout=0.5, ping_interval=None)
    await srv.start()
    stuck = await raw_connect(srv.url, proxy=None, max_queue=1, ping_interval=None)
    try:
        await subscribe(stuck, ["a"])
        for i in range(300):  # ~19 MB that the client never reads: its sender blocks
            srv.hub.on_next(("a", {"seq": i, "pad": payload}))
        for _ in range(100):
            await asyncio.sleep(0.01)
        assert srv.clients[0].queued > 0  # the pipes are full, the queue is not draining
        # Without the close_timeout bound, closing would wait forever for the handshake.
        await asyncio.wait_for(srv.stop(), STEP)
        assert srv.clients == []
    finally:
        stuck.transport.abort()
