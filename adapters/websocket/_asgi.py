"""A Starlette / FastAPI ``WebSocket`` as a :class:`~reactive_services.adapters.websocket.Transport`, so that an
ASGI app (the API gateway on uvicorn) can accept ``/ws`` itself and hand the connection to a
:class:`~reactive_services.adapters.websocket.WebSocketServer` and its hub.

Starlette is imported lazily (only when a :class:`StarletteTransport` is made), so this module
imports without it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from reactive_services.errors import ConnectionClosedError

from ._transport import fit_close_reason

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

__all__ = ["StarletteTransport"]

logger = logging.getLogger("reactive_services.adapters.websocket")


class StarletteTransport:
    """:class:`~reactive_services.adapters.websocket.Transport` over an accepted Starlette ``WebSocket``.

    The handshake (authentication, ``accept()``) stays with the app; attach the websocket
    after ``accept()``::

        @app.websocket("/ws")
        async def ws(websocket: WebSocket) -> None:
            scopes = authenticate(websocket)            # the gateway's business
            if scopes is None:
                await websocket.accept()                # closing before accept() is an HTTP 403
                await websocket.close(CLOSE_UNAUTHORIZED, "invalid token")   # 4401
                return
            await websocket.accept()
            await server.serve(StarletteTransport(websocket), allowed_channels=scopes.allows)

    Memory per connection at the ASGI server's level is the server's business: uvicorn's
    websocket protocols wait for their transport to be writable (asyncio's 64 KiB high-water
    mark) before each write, so its buffer holds at most that plus one frame.

    ASGI has no "abort": when the peer does not complete the closing handshake within
    ``close_timeout`` seconds (a client that does not read cannot), :meth:`close` gives up and
    returns, so ``serve()`` returns and the app's handler ends; the ASGI server then drops the
    TCP connection as it sees fit (uvicorn closes the transport, which waits for its buffer
    to drain or the peer to go away).

    Args:
        websocket: a ``starlette.websockets.WebSocket`` (FastAPI's is the same class), accepted.
        close_timeout: seconds :meth:`close` waits for the ASGI server to send the close frame.

    Raises:
        RuntimeError: the websocket has not been accepted (or is already closed).

    Attributes:
        websocket: the wrapped Starlette ``WebSocket`` (scope, headers, query params...).
    """

    def __init__(self, websocket: WebSocket, *, close_timeout: float = 5.0) -> None:
        from starlette.websockets import WebSocketState

        if websocket.application_state is not WebSocketState.CONNECTED:
            raise RuntimeError(
                f"accept() the websocket before attaching it (its state is {websocket.application_state.name})"
            )
        self.websocket = websocket
        self.close_timeout = close_timeout
        self._close_code: int | None = None
        self._close_reason: str | None = None
        self._closing = asyncio.Event()

    def __repr__(self) -> str:
        return f"<StarletteTransport {self.remote_address}>"

    @property
    def remote_address(self) -> Any:
        client = self.websocket.client
        return None if client is None else (client.host, client.port)

    @property
    def close_code(self) -> int | None:
        """None while open; then the code of the ASGI ``websocket.disconnect`` message (the
        peer's close code, or ours when we closed first; 1006 if the connection dropped)."""
        return self._close_code

    @property
    def close_reason(self) -> str | None:
        return self._close_reason

    def _closed(self, code: int, reason: str) -> None:
        if self._close_code is None:
            self._close_code, self._close_reason = code, reason

    async def send(self, data: str | bytes) -> None:
        from starlette.websockets import WebSocketDisconnect

        if self._close_code is not None:
            raise ConnectionClosedError(self._close_code, self._close_reason or "")
        text = data if isinstance(data, str) else data.decode()
        try:
            await self.websocket.send({"type": "websocket.send", "text": text})
        except WebSocketDisconnect as exc:
            self._closed(exc.code, exc.reason)
            raise ConnectionClosedError(exc.code, exc.reason) from exc
        except (OSError, RuntimeError) as exc:  # uvicorn: ClientDisconnected; starlette: bad state
            self._closed(1006, "")
            raise ConnectionClosedError(self._close_code, self._close_reason or "") from exc

    async def recv(self) -> str | bytes | None:
        from starlette.websockets import WebSocketDisconnect

        if self._close_code is not None:
            return None
        # Race the receive against close(): a close that could not be sent (the peer does not
        # read) produces no disconnect message, and the reader must not wait for one forever.
        receive = asyncio.ensure_future(self.websocket.receive())
        closed = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait((receive, closed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            if not receive.done():
                receive.cancel()
        if not receive.done() or receive.cancelled():  # close() gave up: no message will come
            return None
        try:
            message = receive.result()
        except WebSocketDisconnect as exc:
            self._closed(exc.code, exc.reason)
            return None
        except (OSError, RuntimeError):  # receive() after the disconnect message
            self._closed(1006, "")
            return None
        if message["type"] == "websocket.disconnect":
            self._closed(int(message.get("code", 1005)), message.get("reason") or "")
            return None
        text = message.get("text")
        if text is not None:
            return str(text)
        return bytes(message.get("bytes") or b"")

    async def close(self, code: int = 1000, reason: str = "") -> None:
        from starlette.websockets import WebSocketDisconnect

        if self._close_code is not None:
            return
        reason = fit_close_reason(reason)
        self._closed(code, reason)
        try:
            async with asyncio.timeout(self.close_timeout):
                await self.websocket.close(code, reason)
        except TimeoutError:
            logger.info(
                "%s: the close frame could not be sent within %ss (the client does not read);"
                " leaving the TCP connection to the ASGI server",
                self.remote_address,
                self.close_timeout,
            )
        except (WebSocketDisconnect, OSError, RuntimeError):  # already closed or disconnected
            pass
        finally:
            # Wake a pending recv(): after our close the peer's messages are not read any more,
            # and an ASGI server need not report the disconnect (nor can it, if the close frame
            # could not be written).
            self._closing.set()
