"""Shared by the resume tests: a gateway (server + hub + NotificationLog fed by ``log.live()``)
on any broker, and helpers to publish numbered events and read event frames."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection

from reactive_services.adapters import Broker, Message
from reactive_services.adapters.websocket import Notification, NotificationLog, WebSocketServer

STEP = 5.0


def to_notification(message: Message) -> Notification | None:
    """Records of any topic -> channel ``"c"`` (``"skip"`` values are not forwarded)."""
    if message.value == "skip":
        return None
    return Notification("c", message.value)


@asynccontextmanager
async def gateway(
    broker: Broker, topics: list[str], *, epoch: str = "e1", port: int = 0, history: int = 10_000, **server_args: Any
) -> AsyncIterator[WebSocketServer]:
    """A notification server whose default hub has a NotificationLog of ``topics``, fed by
    ``log.live()``; ``history=0``: every resume reads the log (no frames kept in memory)."""
    log = NotificationLog(
        broker, topics, to_notification, epoch=epoch, batch_size=50, poll_timeout_s=0.05, history=history
    )
    await log.open()
    server_args.setdefault("ping_interval", None)
    server_args.setdefault("close_timeout", 1.0)
    async with WebSocketServer("127.0.0.1", port, log=log, **server_args) as server:
        feed = log.live().subscribe(server.hub)
        try:
            yield server
        finally:
            feed.dispose()


async def publish(broker: Broker, topic: str, numbers: range) -> None:
    for n in numbers:
        await broker.emit(topic, {"n": n}, key="k")


async def recv(ws: ClientConnection, timeout: float = STEP) -> dict[str, Any]:
    return orjson.loads(await asyncio.wait_for(ws.recv(), timeout))  # type: ignore[no-any-return]


async def subscribe(ws: ClientConnection, channels: list[str], since: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"op": "subscribe", "channels": channels}
    if since is not None:
        frame["since"] = since
    await ws.send(orjson.dumps(frame).decode())
    return await recv(ws)


async def events(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    """The next ``count`` event frames (other frames are an error)."""
    out = []
    while len(out) < count:
        frame = await recv(ws)
        assert frame["type"] == "event", frame
        out.append(frame)
    return out


async def nothing_more(ws: ClientConnection) -> None:
    """No frame but the pong of a ping: nothing else was queued for this client."""
    await ws.send('{"op": "ping"}')
    assert (await recv(ws))["type"] == "pong"


def numbers(frames: list[dict[str, Any]]) -> list[int]:
    return [f["event"]["n"] for f in frames]
