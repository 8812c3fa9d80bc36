"""The glue between a gateway's websocket route and the notification server.

::

    @app.websocket("/ws")
    async def notifications(websocket: WebSocket) -> None:
        await serve_notifications(websocket, server, jwt, {"orders": "orders:read", "stock": "inventory:read"})

The token comes from ``Authorization: Bearer <token>`` or, for browsers (which cannot set
headers on a websocket), the ``token`` query parameter (keep the server's access log off, or the
token lands in it). A missing or invalid token: the handshake is **accepted, then closed with
4401** and reason ``"unauthorized: <reason>"`` (a browser cannot read the status of a refused
handshake, but it gets the close code). Then the connection is served by the
:class:`~reactive_services.adapters.websocket.WebSocketServer` with the channels the token's
scopes allow: a subscribe to a channel the token may not use closes it with **4403**; one to a
channel that does not exist (a typo) is answered with an ``error`` frame listing the channels
the token may use, and the connection stays open. When the token expires the
connection is closed with 4401 ``"unauthorized: token expired"``.

A server with a :class:`~reactive_services.adapters.websocket.NotificationLog` serves ``"since"``
here too: a client that lost its connection resumes from its last cursor on any gateway instance
(``docs/websocket.md``); the channels of the catch-up are those its token allows, as live.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from starlette.websockets import WebSocket

from reactive_services.adapters.websocket import CLOSE_UNAUTHORIZED, StarletteTransport, Transport, WebSocketServer
from reactive_services.auth import Claims, JwtConfig, verify_token
from reactive_services.errors import AuthenticationError

from ._auth import bearer_token


async def close_at_expiry(transport: Transport, claims: Claims, leeway_s: float = 0.0) -> None:
    """Sleep until ``claims`` expire (``exp`` + ``leeway_s`` seconds, as :func:`verify_token` judges
    it), then close ``transport`` with 4401 ``"unauthorized: token expired"``. Cancel it to keep
    the connection."""
    await asyncio.sleep(max(0.0, claims.expires_at + leeway_s - time.time()))
    await transport.close(CLOSE_UNAUTHORIZED, "unauthorized: token expired")


async def serve_notifications(
    websocket: WebSocket, server: WebSocketServer, jwt: JwtConfig, channel_scopes: Mapping[str, str]
) -> None:
    """Authenticate ``websocket`` and serve it with ``server`` until it closes (module docstring).

    Args:
        websocket: a Starlette / FastAPI websocket, not accepted yet.
        server: the notification server that runs the protocol and fans events out.
        jwt: how tokens are verified.
        channel_scopes: ``{channel: the scope a token needs to subscribe to it}``; a channel not
            in it cannot be subscribed to.
    """
    token = bearer_token(websocket.headers.get("authorization")) or websocket.query_params.get("token")
    await websocket.accept()
    try:
        if not token:
            raise AuthenticationError("missing token")
        claims = verify_token(jwt, token)
    except AuthenticationError as exc:
        await websocket.close(CLOSE_UNAUTHORIZED, f"unauthorized: {exc.reason}")
        return
    granted = claims.scopes

    def allowed(channel: str) -> bool:
        needed = channel_scopes.get(channel)
        return needed is not None and needed in granted

    transport = StarletteTransport(websocket)
    async with asyncio.TaskGroup() as tasks:
        expiry = tasks.create_task(close_at_expiry(transport, claims, jwt.leeway_s))
        try:
            await server.serve(transport, allowed_channels=allowed, channels=channel_scopes.keys())
        finally:
            expiry.cancel()
