"""The websocket server: accepts clients, answers their subscribe / unsubscribe / ping frames,
and gives each client a bounded outgoing queue drained by its own sender task.

Built on :func:`websockets.asyncio.server.serve`; any other websocket server can hand its
accepted connections over through the :class:`~reactive_services.adapters.websocket.Transport` seam
(:meth:`WebSocketServer.serve`). Fan-out of notifications is the job of
:class:`reactive_services.adapters.websocket.NotificationHub`, which enqueues pre-encoded frames on the
:class:`Connection` objects this server keeps.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Collection, Coroutine
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

import orjson
from reactivex import Observable
from reactivex.subject import Subject
from websockets.asyncio.server import Server, ServerConnection, serve

from reactive_services.errors import ConfigError, ConnectionClosedError, DecodeError, ValidationError, WebSocketError

from .._codec import dumps
from ._codec import (
    MAX_CHANNELS,
    ClientFrame,
    encode_error,
    encode_pong,
    encode_recovery_failed,
    encode_subscribed,
    parse_client_frame,
)
from ._transport import Transport, WebSocketsTransport, fit_close_reason

if TYPE_CHECKING:
    from ._hub import NotificationHub
    from ._resume import NotificationLog

__all__ = ["CLOSE_FORBIDDEN", "CLOSE_UNAUTHORIZED", "Connection", "OverflowPolicy", "WebSocketServer"]

logger = logging.getLogger("reactive_services.adapters.websocket")

#: What happens when a client's outgoing queue is full (see :class:`WebSocketServer`).
OverflowPolicy = Literal["close", "drop_oldest", "keep_latest"]
OVERFLOW_POLICIES: tuple[str, ...] = get_args(OverflowPolicy)

#: Close code for a connection without valid credentials (sent by the app at the handshake).
CLOSE_UNAUTHORIZED = 4401
#: Close code for a subscribe to a channel the connection is not allowed to read.
CLOSE_FORBIDDEN = 4403
#: Close code for a client frame over ``max_message_size`` (RFC 6455: message too big).
CLOSE_MESSAGE_TOO_BIG = 1009

#: Close codes after which a connection's ``messages`` completes instead of erroring.
NORMAL_CLOSE_CODES = frozenset({1000, 1001})

# What Connection._enqueue reports.
QUEUED, DROPPED, OVERFLOW = 0, 1, 2


class _Tally(Protocol):
    """Who counts a queued frame's fate (a NotificationHub)."""

    delivered: int
    dropped: int


class Connection:
    """One accepted websocket client.

    Attributes:
        id: a number unique within its server (1, 2, ... in accept order).
        remote_address: the client's ``(host, port)`` (more items for IPv6).
        channels: the channels the client is currently subscribed to (read-only for users:
            the server updates it from the client's subscribe / unsubscribe frames).
        transport: the :class:`~reactive_services.adapters.websocket.Transport` the connection runs on.
        dropped: frames discarded from this client's queue by the ``drop_oldest`` /
            ``keep_latest`` overflow policies.
    """

    def __init__(
        self,
        server: WebSocketServer,
        transport: Transport,
        id: int,
        allowed_channels: Callable[[str], bool] | None = None,
        channels: Collection[str] | None = None,
    ) -> None:
        self.id = id
        self.transport = transport
        self.remote_address: Any = transport.remote_address
        self.channels: set[str] = set()
        self.dropped = 0
        self._server = server
        self._allowed = allowed_channels
        self._known = channels
        self._send_nowait: Callable[[bytes], bool] | None = getattr(transport, "send_nowait", None)
        self._messages: Subject[ClientFrame] = Subject()
        self._outbox: deque[tuple[bytes, _Tally | None]] = deque()
        self._wake = asyncio.Event()
        # Set while nothing is queued and nothing is being sent (the sender waits on _wake).
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._overflowing = False
        self._tasks: asyncio.TaskGroup | None = None
        # Resuming from a cursor (._resume): the hub skips a client while its catch-up reader
        # runs, then skips the records at or before _after {(topic, partition): next offset}.
        self._catching_up = False
        self._after: dict[tuple[str, int], int] | None = None
        self._resuming: asyncio.Task[None] | None = None

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
        (e.g. 1013 after the client was closed as a slow consumer, 4403 after a refused
        subscribe, 1006 if the TCP connection dropped). Subscribe from the
        ``server.connections`` callback to see every frame.
        """
        return self._messages

    @property
    def is_open(self) -> bool:
        """Whether frames can still be queued for this client."""
        return not self._closing and self.transport.close_code is None

    @property
    def catching_up(self) -> bool:
        """Whether the client is being caught up from a cursor (``since``) and is not live yet."""
        return self._catching_up

    @property
    def queued(self) -> int:
        """Number of frames waiting in the outgoing queue (messages, not bytes)."""
        return len(self._outbox)

    @property
    def close_code(self) -> int | None:
        """The close code received from the client once closed (1006 if none), else None."""
        return self.transport.close_code

    def send(self, obj: Any) -> bool:
        """Queue a JSON-serialisable object to be sent to this client as a text frame.

        Never blocks. A full queue applies the server's ``overflow`` policy (see
        :class:`WebSocketServer`).

        Returns:
            True if queued (or written at once); False if dropped because the connection is
            closing or was closed by the ``close`` policy.

        Raises:
            TypeError: ``obj`` is not JSON-serialisable.
        """
        try:
            frame = dumps(obj)  # queued: in memory of its own size
        except orjson.JSONEncodeError as exc:
            raise TypeError(f"frame is not JSON-serialisable: {exc}") from exc
        return self._enqueue(frame) == QUEUED

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Drop the frames still queued and close the connection with ``code`` / ``reason``
        (cut to 123 UTF-8 bytes).

        Bounded in time: the transport waits for the closing handshake at most the server's
        ``close_timeout`` seconds, then aborts the TCP connection (a client that does not read
        never answers the handshake). Idempotent.
        """
        self._stop_sending()
        await self.transport.close(code, fit_close_reason(reason))

    # internals

    def _stop_sending(self) -> None:
        self._closing = True
        self._outbox.clear()
        self._idle.set()
        self._wake.set()

    def _enqueue(self, frame: bytes, tally: _Tally | None = None) -> int:
        """Queue a frame without blocking: QUEUED, DROPPED (closing) or OVERFLOW (closed now).

        When nothing is queued or in flight and the transport can write at once
        (``send_nowait``), the frame skips the queue. Otherwise it is queued; a full queue
        applies the overflow policy. The queue is full only when the sender task has not
        kept up: it is blocked in ``transport.send`` (the write buffer is above its high-water
        mark because the client does not read), or the producer queued ``queue_size`` frames
        without yielding to the event loop.
        """
        if self._closing:
            return DROPPED
        outbox = self._outbox
        if self._send_nowait is not None and self._idle.is_set() and self._send_nowait(frame):
            if tally is not None:
                tally.delivered += 1
            return QUEUED
        if len(outbox) >= self._server.queue_size:
            return self._overflow(frame, tally)
        outbox.append((frame, tally))
        if self._idle.is_set():
            self._idle.clear()
            self._wake.set()
        return QUEUED

    def _overflow(self, frame: bytes, tally: _Tally | None) -> int:
        server, outbox = self._server, self._outbox
        policy = server.overflow
        if policy == "close":
            logger.warning(
                "connection %s: %d frames queued, closing it as a slow consumer (code %d)",
                self.id,
                len(outbox),
                server.overflow_close_code,
            )
            server.slow_clients_closed += 1
            self._stop_sending()
            self._spawn(self.close(server.overflow_close_code, "slow consumer"))
            return OVERFLOW
        if not self._overflowing:
            self._overflowing = True  # log once per episode: until the queue drains again
            logger.warning(
                "connection %s: %d frames queued, the client does not keep up; %s",
                self.id,
                len(outbox),
                "dropping the oldest frames" if policy == "drop_oldest" else "keeping only the latest frame",
            )
        if policy == "drop_oldest":
            _, old = outbox.popleft()
            discarded = [old]
        else:  # keep_latest
            discarded = [old for _, old in outbox]
            outbox.clear()
        for old in discarded:
            if old is not None:
                old.dropped += 1
        self.dropped += len(discarded)
        server.dropped += len(discarded)
        outbox.append((frame, tally))
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
        """Drain the outgoing queue, one frame at a time, until the connection closes.

        ``transport.send`` returns at once while the transport's write buffer is below its
        high-water mark, so a burst is written without yielding; it waits while the client
        does not read, and the queue fills meanwhile.
        """
        transport, outbox = self.transport, self._outbox
        while not self._closing:
            if not outbox:
                self._idle.set()
                self._overflowing = False
                self._wake.clear()
                await self._wake.wait()
                continue
            frame, tally = outbox.popleft()
            try:
                await transport.send(frame)
            except WebSocketError:
                self._stop_sending()
                return
            if tally is not None:
                tally.delivered += 1

    def _unknown_channel_error(self, channels: tuple[str, ...]) -> str | None:
        """The error for a subscribe naming a channel that does not exist (with ``channels=``
        given to :meth:`WebSocketServer.serve`), listing the channels this connection may use;
        None when every channel exists."""
        known = self._known
        if known is None:
            return None
        unknown = [c for c in channels if c not in known]
        if not unknown:
            return None
        usable = sorted(c for c in known if self._refused_channel((c,)) is None)
        names = ", ".join(repr(c) for c in unknown)
        return (
            f"unknown channel{'s' if len(unknown) > 1 else ''} {names}; "
            f"the channels you may subscribe to: {', '.join(usable) if usable else 'none'}"
        )

    def _refused_channel(self, channels: tuple[str, ...]) -> str | None:
        """The first channel of a subscribe that ``allowed_channels`` refuses, else None."""
        allowed = self._allowed
        if allowed is None:
            return None
        for channel in channels:
            if channel in self.channels:
                continue
            try:
                ok = allowed(channel)
            except Exception:
                logger.exception("connection %s: allowed_channels(%r) raised; refusing", self.id, channel)
                ok = False
            if not ok:
                return channel
        return None

    def _emit(self, frame: ClientFrame) -> None:
        try:
            self._messages.on_next(frame)
        except Exception:
            logger.exception("connection %s: a messages observer raised", self.id)

    def _finish(self) -> None:
        code = self.transport.close_code
        try:
            if code in NORMAL_CLOSE_CODES:
                self._messages.on_completed()
            else:
                code = 1006 if code is None else code
                self._messages.on_error(ConnectionClosedError(code, self.transport.close_reason or ""))
        except Exception:
            logger.exception("connection %s: a messages observer raised", self.id)


class WebSocketServer:
    """A websocket server for the notification protocol (see :mod:`reactive_services.adapters.websocket`).

    Each client gets an outgoing queue of at most ``queue_size`` frames, drained by its own
    sender task. Queuing never blocks and one slow client never slows the others: when a
    client's queue is full (its sender is blocked because the client does not read), the
    ``overflow`` policy decides:

    - ``"close"``: close the client with ``overflow_close_code`` (1013, "try again later") and
      reason ``"slow consumer"``; its queued frames are dropped (counted in
      :attr:`slow_clients_closed`, not in :attr:`dropped`).
    - ``"drop_oldest"``: discard the oldest queued frame to make room; the client stays
      connected and, once it reads again, gets the newest ``queue_size`` frames.
    - ``"keep_latest"``: discard everything queued and keep only the new frame: a client that
      falls behind jumps to the present.

    The drop policies discard whatever frame is oldest, replies (``subscribed``, ``pong``,
    ``error``) included; each discarded frame is counted in :attr:`dropped`,
    ``Connection.dropped`` and (for events) the hub's ``dropped``.

    Memory per client is bounded: at most ``queue_size`` queued frames, one frame being
    sent, and the transport's write buffer, which holds at most ``write_limit`` bytes plus
    one frame (and control frames). Beyond that only the kernel's socket buffers hold data.

    Per-message compression is off: frames are encoded once per notification and the same
    bytes are written to every subscriber.

    Connections come from this server's own listener (:meth:`start`), or from any other
    websocket server through :meth:`serve` (e.g. an ASGI app's ``/ws`` route with
    :class:`~reactive_services.adapters.websocket.StarletteTransport`); both kinds share the hub.

    Args:
        host: the interface to listen on.
        port: the TCP port; 0 picks a free one (read :attr:`port` after :meth:`start`).
        queue_size: the outgoing queue bound per client, in messages (>= 1).
        overflow: ``"close"``, ``"drop_oldest"`` or ``"keep_latest"`` (see above).
        overflow_close_code: the close code sent to a slow consumer (``"close"`` policy).
        close_timeout: seconds to wait for a client's closing handshake before aborting (> 0).
        max_message_size: the largest client frame accepted, in bytes (larger: close 1009), on
            the listener's connections and on those handed to :meth:`serve` alike.
        ping_interval: seconds between keepalive pings (None: no keepalive).
        write_limit: the high-water mark of each listener connection's write buffer, in bytes
            (websockets' ``write_limit``; the low-water mark is a quarter of it).
        log: the :class:`~reactive_services.adapters.websocket.NotificationLog` of the default hub
            (:attr:`hub`): event frames carry cursors and clients may subscribe with ``since``.
            None: no cursors; a ``since`` is answered with ``recovery_failed``.
        backlog: the listener's backlog, in connections waiting to be accepted (asyncio's
            default is 100: in a reconnect storm of thousands of clients the kernel would drop
            the others' SYNs, and they would retry after 1 s, 3 s, ...); the kernel caps it at
            ``net.core.somaxconn``.

    Raises:
        ConfigError: (a ``ValueError``, naming the parameter) ``queue_size`` < 1, an unknown
            ``overflow``, ``close_timeout`` <= 0, ``write_limit`` < 0, ``backlog`` < 1 or an
            ``overflow_close_code`` outside 1000-4999.

    Attributes:
        slow_clients_closed: clients closed by the ``close`` policy (all hubs, and replies).
        dropped: frames discarded by the ``drop_oldest`` / ``keep_latest`` policies.

    Use it as ``async with WebSocketServer() as server:`` or call :meth:`start` /
    :meth:`stop`. Everything runs on the event loop that called :meth:`start` (or, without a
    listener, the first :meth:`serve`).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        queue_size: int = 1000,
        overflow: OverflowPolicy = "close",
        overflow_close_code: int = 1013,
        close_timeout: float = 5.0,
        max_message_size: int = 64 * 1024,
        ping_interval: float | None = 20.0,
        write_limit: int = 32 * 1024,
        log: NotificationLog | None = None,
        backlog: int = 1024,
    ) -> None:
        if queue_size < 1:
            raise ConfigError("queue_size", f"must be >= 1, not {queue_size}")
        if overflow not in OVERFLOW_POLICIES:
            raise ConfigError("overflow", f"must be one of {', '.join(map(repr, OVERFLOW_POLICIES))}, not {overflow!r}")
        if not 1000 <= overflow_close_code <= 4999:
            raise ConfigError("overflow_close_code", f"must be a close code in 1000-4999, not {overflow_close_code}")
        if not close_timeout > 0:
            raise ConfigError("close_timeout", f"must be > 0 seconds, not {close_timeout}")
        if write_limit < 0:
            raise ConfigError("write_limit", f"must be >= 0 bytes, not {write_limit}")
        if backlog < 1:
            raise ConfigError("backlog", f"must be >= 1 connections, not {backlog}")
        self.backlog = backlog
        self.host = host
        self.queue_size = queue_size
        self.overflow: OverflowPolicy = overflow
        self.overflow_close_code = overflow_close_code
        self.close_timeout = close_timeout
        self.write_limit = write_limit
        self.slow_clients_closed = 0
        self.dropped = 0
        self._port = port
        self._max_message_size = max_message_size
        self._ping_interval = ping_interval
        self._server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._stopping = False
        self._ids = itertools.count(1)
        self._clients: dict[int, Connection] = {}
        self._no_clients = asyncio.Event()
        self._no_clients.set()
        self._by_channel: dict[str, set[Connection]] = {}
        self._connections: Subject[Connection] = Subject()
        self._tasks: set[asyncio.Task[None]] = set()
        self._hub: NotificationHub | None = None
        self._log = log

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

            self._hub = NotificationHub(self, log=self._log)
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
            RuntimeError: already started, or stopped.
        """
        if self._server is not None or self._stopping:
            raise RuntimeError("the server is already started" if self._server else "the server is stopped")
        self._bind_loop()
        self._server = await serve(
            self._handle,
            self.host,
            self._port,
            compression=None,
            max_size=self._max_message_size,
            ping_interval=self._ping_interval,
            close_timeout=self.close_timeout,
            write_limit=self.write_limit,
            backlog=self.backlog,
        )
        logger.info("websocket server listening on %s", self.url)

    async def serve(
        self,
        transport: Transport,
        *,
        allowed_channels: Callable[[str], bool] | None = None,
        channels: Collection[str] | None = None,
    ) -> None:
        """Run the notification protocol on a connection accepted elsewhere, until it closes.

        The connection joins :attr:`clients` and :attr:`connections` and gets this server's
        queue and overflow policy and the hub's notifications, exactly like a client of the
        listener; :meth:`start` is not needed. Returns once the connection is closed (by the
        client, the hub, :meth:`stop` or a refused subscribe); never raises for a closed
        connection.

        Args:
            transport: the accepted connection, e.g. ``StarletteTransport(websocket)`` after
                ``await websocket.accept()``.
            allowed_channels: ``allowed_channels(channel) -> bool``, asked for each channel a
                subscribe adds. A refused channel closes the connection with 4403
                (:data:`CLOSE_FORBIDDEN`) and reason ``"channel not allowed: '<name>'"``; the
                subscribe is not applied. A callback that raises refuses. None: all allowed.
            channels: the channels that exist (e.g. the keys of a channel -> scope map), or
                None (any name). A subscribe naming one that does not exist (a typo) is
                answered with an ``error`` frame naming it and listing the channels this
                connection may subscribe to (those ``allowed_channels`` allows); the subscribe
                is rejected whole and **the connection stays open**, as for any bad frame.

        Raises:
            RuntimeError: called on another event loop than the server's.
        """
        self._bind_loop()
        if self._stopping:
            await transport.close(1001, "server stopping")
            return
        conn = Connection(self, transport, next(self._ids), allowed_channels, channels)
        self._clients[conn.id] = conn
        self._no_clients.clear()
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
                    if conn._resuming is not None:  # e.g. still waiting for a catch-up reader slot
                        conn._resuming.cancel()
        finally:
            del self._clients[conn.id]
            if not self._clients:
                self._no_clients.set()
            for channel in conn.channels:
                self._unindex(conn, channel)
            conn._finish()

    async def stop(self, code: int = 1001, reason: str = "server stopping") -> None:
        """Stop accepting clients, close every open connection (the listener's and those
        handed to :meth:`serve`) with ``code`` / ``reason`` (frames still queued are dropped;
        call ``hub.wait_idle()`` first to flush them), wait until every connection handler
        has returned, then complete :attr:`connections`. Idempotent.
        """
        if self._stopping:
            return
        self._stopping = True
        if self._loop is None:  # never started nor served
            self._connections.on_completed()
            return
        # Close open connections ourselves first: Connection.close is bounded by close_timeout
        # even for a client that stopped reading (websockets' own close would wait for it).
        # Then websockets stops listening, rejects handshakes in progress and closes the rest.
        await asyncio.gather(*(conn.close(code, reason) for conn in self.clients))
        if self._server is not None:
            self._server.close(close_connections=True, code=code, reason=reason)
            await self._server.wait_closed()
        try:  # connections handed to serve(): their handlers return once the transport closed
            async with asyncio.timeout(self.close_timeout):
                await self._no_clients.wait()
        except TimeoutError:
            logger.warning("%d connection handlers still running after stop()", len(self._clients))
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

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._loop_thread = threading.get_ident()
        elif self._loop is not loop:
            raise RuntimeError("the websocket server runs on another event loop")

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
        await self.serve(WebSocketsTransport(ws, close_timeout=self.close_timeout))

    async def _read_loop(self, conn: Connection) -> None:
        transport = conn.transport
        limit = self._max_message_size
        while (data := await transport.recv()) is not None:
            # the listener's own connections are held to it by websockets (max_size); a transport
            # accepted elsewhere (an ASGI server allows 16 MiB by default) is held to it here
            if len(data) > limit // 4 and len(data.encode() if isinstance(data, str) else data) > limit:
                logger.info("connection %s: a frame over %d bytes, closing 1009", conn.id, limit)
                await conn.close(CLOSE_MESSAGE_TOO_BIG, f"message too big (at most {limit} bytes)")
                return
            try:
                frame = parse_client_frame(data)
            except (DecodeError, ValidationError) as exc:
                conn._enqueue(encode_error(str(exc)))
                continue
            if frame.op == "subscribe":
                unknown = conn._unknown_channel_error(frame.channels)
                if unknown is not None:  # a typo: answered like any other bad frame, the connection stays
                    conn._enqueue(encode_error(unknown))
                    continue
                refused = conn._refused_channel(frame.channels)
                if refused is not None:
                    logger.info("connection %s: subscribe to %r refused, closing", conn.id, refused)
                    await conn.close(CLOSE_FORBIDDEN, f"channel not allowed: {refused!r}")
                    return
            if self._apply(conn, frame):
                conn._emit(frame)

    def _apply(self, conn: Connection, frame: ClientFrame) -> bool:
        """Handle a valid frame; False if it was rejected (an error frame was queued)."""
        if frame.op == "ping":
            conn._enqueue(encode_pong())
            return True
        if frame.op == "subscribe":
            if frame.since is not None and conn._catching_up:
                conn._enqueue(encode_error("a resume ('since') is already in progress on this connection"))
                return False
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
        hub = self.hub if self._log is not None else self._hub
        log = hub.log if hub is not None else None
        live = log is not None and not conn._catching_up and conn._after is None and frame.since is None
        conn._enqueue(encode_subscribed(conn.channels, log.cursor() if live and log is not None else None))
        if frame.since is not None:
            if hub is None or log is None:
                conn._enqueue(encode_recovery_failed("this server keeps no history to resume from"))
            else:
                from ._resume import resume

                conn._catching_up = True  # before any other notification: the hub skips it now
                assert conn._tasks is not None
                conn._resuming = conn._tasks.create_task(resume(log, hub, conn, frame.since))
        return True

    def _unindex(self, conn: Connection, channel: str) -> None:
        members = self._by_channel.get(channel)
        if members is not None:
            members.discard(conn)
            if not members:
                del self._by_channel[channel]
