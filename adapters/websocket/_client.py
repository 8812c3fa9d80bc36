"""The client side: a websocket connection as a cold reactivex Observable of server frames."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from reactivex import Observable, abc
from reactivex.disposable import Disposable
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from reactive_services.errors import (
    ConnectionClosedError,
    DecodeError,
    ValidationError,
    WebSocketError,
)

from ._codec import decode_server_frame, encode_subscribe, validate_channels

__all__ = ["connect"]

logger = logging.getLogger("reactive_services.adapters.websocket")

#: Running client tasks, kept referenced so they are not garbage-collected mid-flight.
_tasks: set[asyncio.Task[None]] = set()


def connect(
    url: str,
    *,
    subscribe: Sequence[str] | None = None,
    events_only: bool = False,
    open_timeout: float | None = 10.0,
    max_message_size: int | None = 1024 * 1024,
) -> Observable[dict[str, Any]]:
    """A cold Observable of the frames a notification server sends.

    Subscribing opens the connection (in an asyncio task on the running event loop), sends
    ``{"op": "subscribe", "channels": subscribe}`` if ``subscribe`` is given, then emits each
    server frame decoded as a dict::

        {"type": "subscribed", "channels": [...]}
        {"type": "event", "channel": "orders", "event": {...}}
        {"type": "pong"} / {"type": "error", "error": "..."}

    With ``events_only=True`` only the ``"event"`` frames are emitted (the others are
    dropped). Disposing the subscription closes the connection with code 1000; nothing is
    emitted after that.

    Example::

        connect(server.url, subscribe=["orders"], events_only=True).pipe(
            ops.map(lambda frame: frame["event"]),
        ).subscribe(print)

    Args:
        url: ``ws://host:port[/path]`` (or ``wss://``).
        subscribe: channels to subscribe to right after connecting (validated now).
        events_only: emit only ``{"type": "event", ...}`` frames.
        open_timeout: seconds allowed for the TCP connect + opening handshake (None: no limit).
        max_message_size: the largest server frame accepted, in bytes.

    No HTTP proxy is used, whatever the environment says.

    Returns:
        ``Observable[dict]``; it completes when the server closes with 1000 or 1001, and
        errors with:

        - :class:`~reactive_services.errors.ConnectionClosedError` (``.code``, ``.reason``)
            on any other close code (1006 when the connection dropped without a close frame);
        - :class:`~reactive_services.errors.WebSocketError` when the connection cannot be
            opened (refused, handshake rejected, timeout, bad URL);
        - :class:`~reactive_services.errors.DecodeError` /
            :class:`~reactive_services.errors.ValidationError` on a frame that is not a JSON
            object with a string ``"type"`` (the connection is then closed with 1000);
        - ``RuntimeError`` if subscribed to outside a running asyncio event loop.

    Raises:
        ValidationError: ``subscribe`` is not a valid list of channel names.
    """
    channels = validate_channels(list(subscribe)) if subscribe is not None else None

    def on_subscribe(
        observer: abc.ObserverBase[dict[str, Any]], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            observer.on_error(
                RuntimeError(
                    "reactive_services.adapters.websocket.connect must be subscribed to on a running asyncio loop"
                )
            )
            return Disposable()
        disposed = False

        def is_disposed() -> bool:
            return disposed

        task = loop.create_task(_run(url, channels, events_only, open_timeout, max_message_size, observer, is_disposed))
        _tasks.add(task)
        task.add_done_callback(_task_done)

        def dispose() -> None:
            nonlocal disposed
            disposed = True
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                task.cancel()
            else:
                loop.call_soon_threadsafe(task.cancel)

        return Disposable(dispose)

    return Observable(on_subscribe)


def _task_done(task: asyncio.Task[None]) -> None:
    _tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.error("websocket client task failed", exc_info=task.exception())


async def _run(
    url: str,
    channels: tuple[str, ...] | None,
    events_only: bool,
    open_timeout: float | None,
    max_message_size: int | None,
    observer: abc.ObserverBase[dict[str, Any]],
    is_disposed: Callable[[], bool],
) -> None:
    try:
        ws = await ws_connect(url, open_timeout=open_timeout, max_size=max_message_size, proxy=None)
    except (OSError, TimeoutError, InvalidURI, InvalidHandshake) as exc:
        if not is_disposed():
            error = WebSocketError(f"cannot connect to {url}: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            observer.on_error(error)
        return
    # Cancelling this task (dispose) interrupts recv(); the finally block then closes with 1000.
    try:
        await _read(ws, channels, events_only, observer, is_disposed)
    finally:
        await ws.close(1000)


async def _read(
    ws: ClientConnection,
    channels: tuple[str, ...] | None,
    events_only: bool,
    observer: abc.ObserverBase[dict[str, Any]],
    is_disposed: Callable[[], bool],
) -> None:
    try:
        if channels is not None:
            await ws.send(encode_subscribe(channels), text=True)
        while True:
            data = await ws.recv()
            if is_disposed():
                return
            try:
                frame = decode_server_frame(data)
            except (DecodeError, ValidationError) as exc:
                observer.on_error(exc)
                return
            if events_only and frame["type"] != "event":
                continue
            try:
                observer.on_next(frame)
            except Exception as exc:  # a user callback raised: it goes to on_error
                observer.on_error(exc)
                return
            if is_disposed():
                return
    except ConnectionClosed as exc:
        if is_disposed():
            return
        code = exc.rcvd.code if exc.rcvd is not None else 1006
        reason = exc.rcvd.reason if exc.rcvd is not None else ""
        if code in (1000, 1001):
            observer.on_completed()
        else:
            error = ConnectionClosedError(code, reason)
            error.__cause__ = exc
            observer.on_error(error)
