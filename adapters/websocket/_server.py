"""The websocket server: accepts clients, answers their subscribe / unsubscribe / ping frames,
and gives each client a bounded outgoing queue drained by its own sender task.

Built on :func:`websockets.asyncio.server.serve`. Fan-out of notifications is the job of
:class:`adapters.websocket.NotificationHub`, which enqueues pre-encoded frames on the
:class:`Connection` objects this server keeps.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Coroutine

import orjson
from reactivex import Observable
from reactivex.subject import Subject
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from reactive_services.errors import ConfigError, ConnectionClosedError, DecodeError, ValidationError

from ._codec import (
    MAX_CHANNELS,
    ClientFrame,
    encode_error,
    encode_pong,
    encode_subscribed,
    parse_client_frame,
)

if TYPE_CHECKING:
    from ._hub import NotificationHub

__all__ = ["Connection", "WebSocketServer"]

logger = logging.getLogger("adapters.websocket")

#: Close codes after which a connection's ``messages`` completes instead of erroring.
NORMAL_CLOSE_CODES = frozenset({1000, 1001})

# What Connection._enqueue reports.
QUEUED, DROPPED, OVERFLOW = 0, 1, 2


class Connection:
    """One accepted websocket client.

    Attributes:
        id: a number unique within its server (1, 2, ... in accept order).
        remote_address: the client's ``(host, port)`` (more items for IPv6).
        channels: the channels the client is currently subscribed to (read-only for users:
            the server updates it from the client's subscribe / unsubscribe frames).
    """

    def __init__(self, server: WebSocketServer, ws: ServerConnection, id: int) -> None:
        self.id = id
        self.remote_address: Any = ws.remote_address
        self.channels: set[str] = set()
        self._server = server
        self._ws = ws
        self._messages: Subject[ClientFrame] = Subject()
        self._outbox: deque[tuple[bytes, Callable[[], None] | None]] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._tasks: asyncio.TaskGroup | None = None

    def __repr__(self) -> str:
        return f"<Connection {self.id} {self.remote_address} channels={sorted(self.channels)}>"

    @property
    def messages(self) -> Observable[ClientFrame]:
        """A hot Observable of the client's valid frames, as :class:`ClientFrame`.

        Each frame is emitted after the server has handled it (so ``channels`` is already
        updated). Frames that are not valid, or that the server rejected (a subscribe over the
        channel limit), get an error frame and are not emitted. It
        completes when the connection closes with 1000 / 1001 and errors with
        :class:`~reactive_services.errors.ConnectionClosedError` on any other close code
        (e.g. 1013 after the client was closed as a slow consumer, 1006 if the TCP
        connection dropped). Subscribe from the ``server.connections`` callback to see
        every frame.
        """
        return self._messages

    @property
    def is_open(self) -> bool:
        """Whether frames can still be queued for this client."""
        return not self._closing and self._ws.state is State.OPEN

    @property
    def queued(self) -> int:
        """Number of frames waiting in the outgoing queue (messages, not bytes)."""
        return len(self._outbox)

    @property
    def close_code(self) -> int | None:
        """The close code received from the client once closed (1006 if none), else None."""
        return self._ws.close_code

    def send(self, obj: Any) -> bool:
        """Queue a JSON-serialisable object to be sent to this client as a text frame.

        Never blocks. A full queue closes the client as a slow consumer (see
        :class:`WebSocketServer`).

        Returns:
            True if queued; False if dropped because the connection is closing or overflowed.

        Raises:
            TypeError: ``obj`` is not JSON-serialisable.
        """
        try:
            frame = orjson.dumps(obj)
        except orjson.JSONEncodeError as exc:
            raise TypeError(f"frame is not JSON-serialisable: {exc}") from exc
        return self._enqueue(frame) == QUEUED

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Drop the frames still queued and close the connection with ``code`` / ``reason``.

        Waits for the closing handshake at most the server's ``close_timeout`` seconds, then
        aborts the TCP connection (a client that does not read never answers the handshake).
        Idempotent.
        """
        self._stop_sending()
        try:
            async with asyncio.timeout(self._server.close_timeout):
                await self._ws.close(code, reason)
        except TimeoutError:
            logger.info("connection %s: no closing handshake after %ss, aborting", self.id, self._server.close_timeout)
            self._ws.transport.abort()

    # internals

    def _stop_sending(self) -> None:
        self._closing = True
        self._outbox.clear()
        self._idle.set()
        self._wake.set()

    def _enqueue(self, frame: bytes, on_sent: Callable[[], None] | None = None) -> int:
        """Queue a frame without blocking: QUEUED, DROPPED (closing) or OVERFLOW (closed now)."""
        if self._closing:
            return DROPPED
        if len(self._outbox) >= self._server.queue_size:
            logger.warning(
                "connection %s: %d frames queued, closing it as a slow consumer (code %d)",
                self.id,
                len(self._outbox),
                self._server.overflow_close_code,
            )
            self._stop_sending()
            self._spawn(self.close(self._server.overflow_close_code, "slow consumer"))
            return OVERFLOW
        self._outbox.append((frame, on_sent))
        if self._idle.is_set():
            self._idle.clear()
            self._wake.set()
        return QUEUED

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._tasks is not None:
            try:
                self._tasks.create_task(coro)
                return
            except RuntimeError:  # the connection's task group has already finished
                pass
        self._server._spawn(coro)

    async def _send_loop(self) -> None:
        """Drain the outgoing queue, one frame at a time, until the connection closes."""
        ws, outbox = self._ws, self._outbox
        while not self._closing:
            if not outbox:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            frame, on_sent = outbox.popleft()
            try:
                await ws.send(frame, text=True)
            except ConnectionClosed:
                self._stop_sending()
                return
            if on_sent is not None:
                on_sent()

    def _emit(self, frame: ClientFrame) -> None:
        try:
            self._messages.on_next(frame)
        except Exception:
            logger.exception("connection %s: a messages observer raised", self.id)

    def _finish(self) -> None:
        code = self._ws.close_code
        try:
            if code in NORMAL_CLOSE_CODES:
                self._messages.on_completed()
            else:
                self._messages.on_error(ConnectionClosedError(code, self._ws.close_reason or ""))
        except Exception:
            logger.exception("connection %s: a messages observer raised", self.id)


class WebSocketServer:
    """A websocket server for the notification protocol (see :mod:`adapters.websocket`).

    Each client gets an outgoing queue of at most ``queue_size`` frames, drained by its own
    sender task. Queuing never blocks: when a client's queue is full the client is closed
    with ``overflow_close_code`` (1013, "try again later") and reason ``"slow consumer"``,
    and its queued frames are dropped, so one slow client never slows the others.

    Per-message compression is off: frames are encoded once per notification and the same
    bytes are written to every subscriber.

    Args:
        host: the interface to listen on.
        port: the TCP port; 0 picks a free one (read :attr:`port` after :meth:`start`).
        queue_size: the outgoing queue bound per client, in messages (>= 1).
        overflow_close_code: the close code sent to a slow consumer.
        close_timeout: seconds to wait for a client's closing handshake before aborting.
        max_message_size: the largest client frame accepted, in bytes (larger: close 1009).
        ping_interval: seconds between keepalive pings (None: no keepalive).

    Raises:
        ConfigError: ``queue_size`` < 1.

    Use it as ``async with WebSocketServer() as server:`` or call :meth:`start` /
    :meth:`stop`. Everything runs on the event loop that called :meth:`start`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        queue_size: int = 1000,
        overflow_close_code: int = 1013,
        close_timeout: float = 5.0,
        max_message_size: int = 64 * 1024,
        ping_interval: float | None = 20.0,
    ) -> None:
        if queue_size < 1:
            raise ConfigError("queue_size", f"must be >= 1, not {queue_size}")
        self.host = host
        self.queue_size = queue_size
        self.overflow_close_code = overflow_close_code
        self.close_timeout = close_timeout
        self._port = port
        self._max_message_size = max_message_size
        self._ping_interval = ping_interval
        self._server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._ids = itertools.count(1)
        self._clients: dict[int, Connection] = {}
        self._by_channel: dict[str, set[Connection]] = {}
        self._connections: Subject[Connection] = Subject()
        self._tasks: set[asyncio.Task[None]] = set()
        self._hub: NotificationHub | None = None

    # public surface

    @property
    def connections(self) -> Observable[Connection]:
        """A hot Observable emitting one :class:`Connection` per accepted client.

        It emits before the server reads the client's first frame, so subscribing to
        ``connection.messages`` in the callback sees every frame. It completes on :meth:`stop`.
        """
        return self._connections

    @property
    def clients(self) -> list[Connection]:
        """The connections currently open, in accept order."""
        return list(self._clients.values())

    @property
    def hub(self) -> NotificationHub:
        """This server's default :class:`NotificationHub` (created on first use)."""
        if self._hub is None:
            from ._hub import NotificationHub

            self._hub = NotificationHub(self)
        return self._hub

    @property
    def port(self) -> int:
        """The TCP port listened on. Raises RuntimeError before :meth:`start`."""
        if self._server is None:
            raise RuntimeError("the server is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """``ws://host:port`` (IPv6 hosts in brackets). Raises RuntimeError before :meth:`start`."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}"

    def subscribers(self, channel: str) -> int:
        """How many open connections are subscribed to ``channel``."""
        return len(self._by_channel.get(channel, ()))

    async def start(self) -> None:
        """Bind and start accepting clients.

        Raises:
            OSError: the address cannot be bound (e.g. the port is in use).
            RuntimeError: already started.
        """
        if self._server is not None:
            raise RuntimeError("the server is already started")
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._server = await serve(
            self._handle,
            self.host,
            self._port,
            compression=None,
            max_size=self._max_message_size,
            ping_interval=self._ping_interval,
            close_timeout=self.close_timeout,
        )
        logger.info("websocket server listening on %s", self.url)

    async def stop(self, code: int = 1001, reason: str = "server stopping") -> None:
        """Stop accepting clients, close every open connection with ``code`` / ``reason``
        (frames still queued are dropped; call ``hub.wait_idle()`` first to flush them), wait
        until every connection handler has returned, then complete :attr:`connections`.
        Idempotent.
        """
        server = self._server
        if server is None or self._loop is None:
            return
        # Close open connections ourselves first: Connection.close is bounded by close_timeout
        # even for a client that stopped reading (websockets' own close would wait for it).
        # Then websockets stops listening, rejects handshakes in progress and closes the rest.
        await asyncio.gather(*(conn.close(code, reason) for conn in self.clients))
        server.close(close_connections=True, code=code, reason=reason)
        await server.wait_closed()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.close_timeout)
            for task in self._tasks:
                task.cancel()
        self._connections.on_completed()
        logger.info("websocket server stopped")

    async def __aenter__(self) -> WebSocketServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # internals

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a background coroutine owned by the server; its failure is logged, not lost."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("websocket server task failed", exc_info=task.exception())

    async def _handle(self, ws: ServerConnection) -> None:
        conn = Connection(self, ws, next(self._ids))
        self._clients[conn.id] = conn
        try:
            try:
                self._connections.on_next(conn)
            except Exception:
                logger.exception("a connections observer raised")
            async with asyncio.TaskGroup() as tasks:
                conn._tasks = tasks
                sender = tasks.create_task(conn._send_loop())
                try:
                    await self._read_loop(conn)
                finally:
                    conn._stop_sending()
                    sender.cancel()
        finally:
            del self._clients[conn.id]
            for channel in conn.channels:
                self._unindex(conn, channel)
            conn._finish()

    async def _read_loop(self, conn: Connection) -> None:
        try:
            async for data in conn._ws:
                try:
                    frame = parse_client_frame(data)
                except (DecodeError, ValidationError) as exc:
                    conn._enqueue(encode_error(str(exc)))
                    continue
                if self._apply(conn, frame):
                    conn._emit(frame)
        except ConnectionClosed:
            pass

    def _apply(self, conn: Connection, frame: ClientFrame) -> bool:
        """Handle a valid frame; False if it was rejected (an error frame was queued)."""
        if frame.op == "ping":
            conn._enqueue(encode_pong())
            return True
        if frame.op == "subscribe":
            new = [c for c in frame.channels if c not in conn.channels]
            if len(conn.channels) + len(new) > MAX_CHANNELS:
                conn._enqueue(
                    encode_error(
                        f"too many channels: subscribing to {len(new)} more would make"
                        f" {len(conn.channels) + len(new)}, at most {MAX_CHANNELS} per connection"
                    )
                )
                return False
            for channel in new:
                conn.channels.add(channel)
                self._by_channel.setdefault(channel, set()).add(conn)
        else:  # unsubscribe
            for channel in frame.channels:
                if channel in conn.channels:
                    conn.channels.discard(channel)
                    self._unindex(conn, channel)
        conn._enqueue(encode_subscribed(conn.channels))
        return True

    def _unindex(self, conn: Connection, channel: str) -> None:
        members = self._by_channel.get(channel)
        if members is not None:
            members.discard(conn)
            if not members:
                del self._by_channel[channel]
