"""Websocket notifications: a server that fans events out to subscribed clients, and a client
that turns a connection into an Observable.

Protocol
========

Every frame is a JSON object sent as a websocket **text** frame (UTF-8).

Client -> server::

    {"op": "subscribe",   "channels": ["inventory", "orders"]}
    {"op": "subscribe",   "channels": ["orders"], "since": "<cursor>"}  # resume after a cursor
    {"op": "unsubscribe", "channels": ["orders"]}
    {"op": "ping"}

Server -> client::

    {"type": "subscribed", "channels": ["inventory"], "cursor"?: "..."}  # reply to (un)subscribe: ALL channels, sorted
    {"type": "event", "channel": "orders", "event": {...}, "cursor"?: "..."}  # one notification
    {"type": "recovery_failed", "reason": "...", "cursor"?: "..."}  # a since that cannot be honoured
    {"type": "pong"}                                        # reply to ping
    {"type": "error", "error": "unknown op 'subscrbe'; ..."}  # reply to a bad frame

Rules:

- Channel names are non-empty strings of at most 100 characters; a connection is subscribed
  to at most 100 channels at once. Subscribing twice to a channel, or unsubscribing from one
  that is not subscribed, is not an error.
- A bad frame (not JSON, not an object, missing or unknown ``op``, ``channels`` missing or
  not a list of valid names, too many channels) is answered with an ``error`` frame naming the
  problem; it changes nothing and **the connection stays open**. A rejected subscribe is
  rejected whole.
- Frames to one client are sent in order: the ``subscribed`` reply comes before any event of
  the channels it lists.
- Each client has a bounded outgoing queue (``queue_size`` messages, default 1000). When a
  client does not read fast enough to keep it from filling, the server's overflow policy
  applies, and the other clients are not slowed down:

  - ``close`` (default): the client is closed with code **1013** (try again later) and
    reason ``"slow consumer"``;
  - ``drop_oldest``: the oldest queued frame is discarded; the connection stays open and,
    once the client reads again, it gets the newest ``queue_size`` frames (a gap in the
    events, which carry no sequence number: put one in the event if the client must know);
  - ``keep_latest``: every queued frame is discarded and only the newest kept: a client that
    falls behind jumps to the present.

  The drop policies discard replies (``subscribed``, ``pong``, ``error``) like events.
  Memory per client is bounded: ``queue_size`` frames, plus the transport's write buffer
  (``write_limit`` bytes, 32 KiB by default, plus one frame).
- Resuming (a server with a :class:`NotificationLog`): every event frame carries ``"cursor"``
  (opaque: the fan-out's position after this event in every partition of the notification
  topics, and the log's epoch); so does the ``subscribed`` reply of a live subscribe. A subscribe
  with ``"since": cursor`` is answered ``subscribed``, then gets every event of the connection's
  channels after the cursor, in order per partition, without duplicates, then the live stream
  (a catch-up reader of its own reads the log, at the pace the client reads: at most
  ``queue_size`` frames queued, the same overflow policies). A cursor older than the log keeps
  (retention), of another epoch, past the log's end or malformed, or a server without a log,
  gets ``{"type": "recovery_failed", "reason": ...}`` and then the live stream: the client
  reloads its state.
- When the notification stream ends (``hub.on_completed()`` / ``on_error``) the queued events
  are flushed and every client is closed with **1001** (going away); ``server.stop()``
  closes with 1001 too (queued frames are dropped).

Close codes
-----------

=====  =====================================================================================
1000   normal closure (the client's choice)
1001   going away: the notification stream ended, or the server is stopping
1009   a client frame larger than ``max_message_size``
1013   slow consumer: the client's queue overflowed (``overflow="close"``)
4401   no or invalid credentials: sent by the app that owns the handshake (the API gateway),
       right after accepting the websocket (closing before accepting is an HTTP 403 in ASGI)
4403   channel not allowed: a subscribe named a channel the connection's credentials (token
       scopes) do not allow; the reason is ``"channel not allowed: '<channel>'"`` and the
       subscribe is not applied (a channel that does not exist, when the server knows its
       channels, is an ``error`` frame listing the usable ones instead: the connection stays)
=====  =====================================================================================

Python API
==========

Server side::

    async with WebSocketServer("127.0.0.1", 8765, queue_size=256, overflow="drop_oldest") as server:
        notifications.subscribe(server.hub)           # Observable[Notification | (channel, event)]
        server.connections.subscribe(lambda conn: print("client", conn.id, conn.remote_address))
        ...
        await server.hub.wait_idle()                  # every queue flushed
        print(server.hub.published, server.hub.delivered, server.hub.dropped, server.hub.slow_clients_closed)

Another websocket server (an ASGI app on uvicorn) can accept ``/ws`` itself and attach the
connection to the same server and hub, with the same protocol::

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        if (scopes := check_token(websocket)) is None:
            await websocket.close(CLOSE_UNAUTHORIZED, "invalid token")      # 4401
            return
        await server.serve(StarletteTransport(websocket), allowed_channels=scopes.allows)

Any object with the :class:`Transport` members works (``send``, ``recv``, ``close``,
``remote_address``, ``close_code``, ``close_reason``).

Resuming (server side)::

    log = NotificationLog(broker, ["order.created"], to_notification, epoch="shop-1")
    await log.open()                                  # the fan-out starts at the end of the log
    async with WebSocketServer(port=8765, log=log) as server:
        log.live().subscribe(server.hub)              # no consumer group: every instance gets all

Client side (``reconnect``: backoff with jitter, resubscribe with ``since`` = the last cursor)::

    connect("ws://127.0.0.1:8765", subscribe=["orders"], events_only=True, reconnect=True).subscribe(
        on_next=lambda frame: print(frame["channel"], frame["event"]),
        on_completed=lambda: print("server closed 1000/1001"),
        on_error=print,                                # ConnectionClosedError / WebSocketError
    )
"""

from ._asgi import StarletteTransport
from ._client import ConnectionState, Reconnect, connect
from ._codec import (
    MAX_CHANNEL_LENGTH,
    MAX_CHANNELS,
    MAX_CURSOR_LENGTH,
    ClientFrame,
    decode_server_frame,
    encode_error,
    encode_event,
    encode_pong,
    encode_recovery_failed,
    encode_subscribe,
    encode_subscribed,
    encode_unsubscribe,
    parse_client_frame,
    validate_channels,
)
from ._hub import Notification, NotificationHub
from ._resume import CursorError, NotificationLog, decode_cursor, encode_cursor
from ._server import CLOSE_FORBIDDEN, CLOSE_UNAUTHORIZED, Connection, OverflowPolicy, WebSocketServer
from ._transport import Transport, WebSocketsTransport

__all__ = [
    "CLOSE_FORBIDDEN",
    "CLOSE_UNAUTHORIZED",
    "MAX_CHANNELS",
    "MAX_CHANNEL_LENGTH",
    "MAX_CURSOR_LENGTH",
    "ClientFrame",
    "Connection",
    "ConnectionState",
    "CursorError",
    "Notification",
    "NotificationHub",
    "NotificationLog",
    "OverflowPolicy",
    "Reconnect",
    "StarletteTransport",
    "Transport",
    "WebSocketServer",
    "WebSocketsTransport",
    "connect",
    "decode_cursor",
    "decode_server_frame",
    "encode_cursor",
    "encode_error",
    "encode_event",
    "encode_pong",
    "encode_recovery_failed",
    "encode_subscribe",
    "encode_subscribed",
    "encode_unsubscribe",
    "parse_client_frame",
    "validate_channels",
]
