"""The transport seam: what a :class:`~reactive_services.adapters.websocket.Connection` needs from an accepted
websocket, so that any websocket server can hand its connections to the same hub.

- :class:`Transport` is the ``typing.Protocol`` (five members).
- :class:`WebSocketsTransport` adapts python-websockets' ``ServerConnection`` (used by
  :class:`~reactive_services.adapters.websocket.WebSocketServer`'s own listener).
- :class:`~reactive_services.adapters.websocket.StarletteTransport` (in ``_asgi.py``) adapts a Starlette /
  FastAPI ``WebSocket`` accepted by an ASGI server such as uvicorn.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol, runtime_checkable

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from reactive_services.errors import ConnectionClosedError

__all__ = ["Transport", "WebSocketsTransport"]

logger = logging.getLogger("reactive_services.adapters.websocket")

#: The longest close reason a close frame carries, in UTF-8 bytes (RFC 6455, 5.5: 125 - 2).
MAX_CLOSE_REASON_BYTES = 123


def fit_close_reason(text: str) -> str:
    """``text`` cut to fit a close frame (at most 123 UTF-8 bytes, on a character boundary)."""
    data = text.encode()
    if len(data) <= MAX_CLOSE_REASON_BYTES:
        return text
    return data[: MAX_CLOSE_REASON_BYTES - 3].decode(errors="ignore") + "..."


@runtime_checkable
class Transport(Protocol):
    """One accepted websocket connection, as the notification server drives it.

    The server calls :meth:`recv` from one task and :meth:`send` from another (never two
    ``send`` at once), and :meth:`close` from any task. All frames the server sends are
    **text** frames.

    An implementation may also offer ``send_nowait(data: str | bytes) -> bool``: write a text
    frame at once, without awaiting, if the transport's write buffer is below its high-water
    mark, and return True; return False (nothing written) otherwise. The server uses it, when
    nothing is queued for the client, to skip the client's queue and sender task (the way
    ``websockets.broadcast`` writes); a transport without it is always driven through the queue.
    """

    @property
    def remote_address(self) -> Any:
        """The peer's address, e.g. ``(host, port)``; None if unknown."""
        ...

    @property
    def close_code(self) -> int | None:
        """None while the connection is open; once closed, the close code received from the
        peer (or, for transports that cannot tell, the one sent), 1006 if the connection
        dropped without a close frame."""
        ...

    @property
    def close_reason(self) -> str | None:
        """None while open; once closed, the close reason that goes with :attr:`close_code`."""
        ...

    async def send(self, data: str | bytes) -> None:
        """Send one text frame (``bytes`` are UTF-8 text), waiting while the transport's write
        buffer is above its high-water mark (that wait is how a client that does not read shows).

        Raises:
            WebSocketError: the connection is closed (a
                :class:`~reactive_services.errors.ConnectionClosedError` with the code when known).
        """
        ...

    async def recv(self) -> str | bytes | None:
        """The next frame from the peer (``str`` for text, ``bytes`` for binary), or None once
        the connection is closed. Never raises for a closed connection."""
        ...

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close with ``code`` / ``reason`` (at most 123 UTF-8 bytes). Bounded in time even for a
        peer that never reads (the implementation aborts, or gives up, after its close
        timeout). Idempotent."""
        ...


class WebSocketsTransport:
    """:class:`Transport` over python-websockets' ``ServerConnection`` (websockets >= 14).

    Memory per connection at this level is bounded by the connection's ``write_limit``
    (asyncio's write-buffer high-water mark, bytes): :meth:`send` writes one frame then awaits
    ``drain`` while the buffer is above it, and :meth:`send_nowait` writes only below it. So
    the buffer holds at most ``write_limit`` + one frame + control frames (pings, close).

    Args:
        connection: the accepted connection (in the handler of ``websockets.asyncio.server.serve``).
        close_timeout: seconds :meth:`close` waits for the closing handshake before aborting
            the TCP connection (a client that does not read never completes it).

    Attributes:
        connection: the wrapped ``ServerConnection`` (its ``request`` has the path and headers).
    """

    def __init__(self, connection: ServerConnection, *, close_timeout: float = 5.0) -> None:
        self.connection = connection
        self.close_timeout = close_timeout
        # websockets.broadcast writes through protocol.send_text + send_data, and send()
        # waits in drain(); without them (another websockets version) every frame goes
        # through send() alone, and the buffer may hold one more frame.
        # asyncio's (low, high) write-buffer limits, as websockets set them from write_limit.
        self._high: int = connection.transport.get_write_buffer_limits()[1]
        self._fast = all(hasattr(connection, name) for name in ("send_data", "drain")) and hasattr(
            connection.protocol, "send_text"
        )

    def __repr__(self) -> str:
        return f"<WebSocketsTransport {self.remote_address}>"

    @property
    def remote_address(self) -> Any:
        return self.connection.remote_address

    @property
    def close_code(self) -> int | None:
        return self.connection.close_code

    @property
    def close_reason(self) -> str | None:
        return self.connection.close_reason

    @property
    def write_buffer_size(self) -> int:
        """Bytes waiting in the asyncio transport's write buffer (not yet given to the kernel)."""
        return int(self.connection.transport.get_write_buffer_size())

    def send_nowait(self, data: str | bytes) -> bool:
        """Write a text frame now if the write buffer is below its high-water mark.

        The same write as ``websockets.broadcast`` (``protocol.send_text`` + ``send_data``), but
        it refuses instead of growing the buffer past the high-water mark.

        Returns:
            True if written; False if nothing was written (buffer full, connection not open).
        """
        ws = self.connection
        if not self._fast or ws.protocol.state is not State.OPEN or ws.send_in_progress is not None:
            return False
        if ws.transport.get_write_buffer_size() >= self._high:
            return False
        try:
            ws.protocol.send_text(data.encode() if isinstance(data, str) else data)
            ws.send_data()
        except Exception:  # the connection broke under us: let the send loop find out
            logger.debug("send_nowait failed", exc_info=True)
            return False
        return True

    async def send(self, data: str | bytes) -> None:
        ws = self.connection
        try:
            # websockets' send() writes, then waits while the buffer is above the high-water
            # mark. After a send_nowait() left it there, wait *before* writing, so that the
            # buffer never holds more than the high-water mark plus one frame.
            if self._fast and ws.transport.get_write_buffer_size() > self._high:
                await ws.drain()
            await ws.send(data, text=True)
        except ConnectionClosed as exc:
            raise _closed(exc) from exc
        except OSError as exc:  # drain() after the TCP connection broke
            raise ConnectionClosedError(1006, "") from exc

    async def recv(self) -> str | bytes | None:
        try:
            return await self.connection.recv()
        except ConnectionClosed:
            return None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        try:
            async with asyncio.timeout(self.close_timeout):
                await self.connection.close(code, fit_close_reason(reason))
        except TimeoutError:
            logger.info("%s: no closing handshake after %ss, aborting", self.remote_address, self.close_timeout)
            self.connection.transport.abort()


def _closed(exc: ConnectionClosed) -> ConnectionClosedError:
    if exc.rcvd is not None:
        return ConnectionClosedError(exc.rcvd.code, exc.rcvd.reason)
    if exc.sent is not None:
        return ConnectionClosedError(exc.sent.code, exc.sent.reason)
    return ConnectionClosedError(1006, "")
