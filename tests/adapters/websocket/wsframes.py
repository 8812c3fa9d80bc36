"""Client-side frame helpers shared by the websocket tests (a real python-websockets client)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection

STEP = 5.0  # seconds any one frame may take


async def recv(ws: ClientConnection, timeout: float = STEP) -> dict[str, Any]:
    """The next frame, decoded."""
    return orjson.loads(await asyncio.wait_for(ws.recv(), timeout))


async def subscribe(ws: ClientConnection, channels: list[str]) -> dict[str, Any]:
    """Send a subscribe and return the server's reply frame."""
    await ws.send(orjson.dumps({"op": "subscribe", "channels": channels}).decode())
    return await recv(ws)


async def read_until_pong(ws: ClientConnection) -> list[dict[str, Any]]:
    """Send a ping and return every frame received before its pong (frames are ordered)."""
    await ws.send('{"op": "ping"}')
    frames = []
    while (frame := await recv(ws))["type"] != "pong":
        frames.append(frame)
    return frames
