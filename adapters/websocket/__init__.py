"""Websocket notifications: a server that fans events out to subscribed clients, and a client
that turns a connection into an Observable.

Protocol
========

Every frame is a JSON object sent as a websocket **text** frame (UTF-8).

Client -> server::

    {"op": "subscribe",   "channels": ["inventory", "orders"]}
    {"op": "unsubscribe", "channels": ["orders"]}
    {"op": "ping"}

Server -> client::

    {"type": "subscribed", "channels": ["inventory"]}      # reply to (un)subscribe: ALL current channels, sorted
    {"type": "event", "channel": "orders", "event": {...}}  # one notification on a subscribed channel
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
- Each client has a bounded outgoing queue (``queue_size`` messages, default 1000). A client
  that does not read fast enough to keep it from filling is closed with code **1013** (try
  again later) and reason ``"slow consumer"``; the other clients are not slowed down.
- When the notification stream ends (``hub.on_completed()`` / ``on_error``) the queued events
  are flushed and every client is closed with **1001** (going away); ``server.stop()``
  closes with 1001 too (queued frames are dropped).

Python API
==========

Server side::

    async with WebSocketServer("127.0.0.1", 8765) as server:
        notifications.subscribe(server.hub)           # Observable[Notification | (channel, event)]
        server.connections.subscribe(lambda conn: print("client", conn.id, conn.remote_address))
        ...
        await server.hub.wait_idle()                  # every queue flushed
        print(server.hub.published, server.hub.delivered, server.hub.slow_clients_closed)

Client side::

    connect("ws://127.0.0.1:8765", subscribe=["orders"], events_only=True).subscribe(
        on_next=lambda frame: print(frame["channel"], frame["event"]),
        on_completed=lambda: print("server closed 1000/1001"),
        on_error=print,                                # ConnectionClosedError / WebSocketError
    )
"""

from ._client import connect
from ._codec import (
    MAX_CHANNEL_LENGTH,
    MAX_CHANNELS,
    ClientFrame,
    decode_server_frame,
    encode_error,
    encode_event,
    encode_pong,
    encode_subscribe,
    encode_subscribed,
    encode_unsubscribe,
    parse_client_frame,
    validate_channels,
)
from ._hub import Notification, NotificationHub
from ._server import Connection, WebSocketServer

__all__ = [
    "MAX_CHANNELS",
    "MAX_CHANNEL_LENGTH",
    "ClientFrame",
    "Connection",
    "Notification",
    "NotificationHub",
    "WebSocketServer",
    "connect",
    "decode_server_frame",
    "encode_error",
    "encode_event",
    "encode_pong",
    "encode_subscribe",
    "encode_subscribed",
    "encode_unsubscribe",
    "parse_client_frame",
    "validate_channels",
]
