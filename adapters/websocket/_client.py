"""The client side: a websocket connection as a cold reactivex Observable of server frames."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from reactivex import Observable, abc
from reactivex.disposable import Disposable
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from reactive_services.errors import (
    ConfigError,
    ConnectionClosedError,
    DecodeError,
    ValidationError,
    WebSocketError,
)

from ._codec import decode_server_frame, encode_subscribe, validate_channels

__all__ = ["ConnectionState", "Reconnect", "connect"]

logger = logging.getLogger("reactive_services.adapters.websocket")

#: What ``connect(on_state=...)`` reports: opening a connection, connected (subscribe sent),
#: waiting before the next attempt after a lost connection, and over (completed, errored or disposed).
ConnectionState = Literal["connecting", "open", "reconnecting", "closed"]

#: Close codes after which a reconnecting client connects again: going away (server stopping or
#: the notification stream ended), dropped without a close frame, internal error, service
#: restart, try again later (slow consumer), bad gateway.
RETRY_CLOSE_CODES = frozenset({1001, 1006, 1011, 1012, 1013, 1014})


@dataclass(frozen=True, slots=True)
class Reconnect:
    """How :func:`connect` reconnects: exponential backoff with jitter.

    The n-th consecutive failed attempt (n = 1, 2, ...) waits
    ``min(max_s, initial_s * multiplier ** (n - 1)) * (1 - jitter * U)``, U uniform in [0, 1):
    clients cut off together do not all come back at the same moment. The count starts again
    once a connection opens.

    Args:
        initial_s: the first delay, in seconds (> 0).
        max_s: the longest delay (>= initial_s).
        multiplier: the growth of the delay per failed attempt (>= 1).
        jitter: the fraction of each delay taken off at random (0: none, 1: "full jitter").
        max_attempts: consecutive attempts that may fail (connection refused or lost before it
            opened) before the Observable errors; None: no limit.
        random: ``() -> float`` in [0, 1) (tests pass a fixed one).

    Raises:
        ConfigError: a setting out of range (names it).
    """

    initial_s: float = 0.5
    max_s: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.5
    max_attempts: int | None = None
    random: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.initial_s > 0:
            raise ConfigError("initial_s", f"must be > 0 seconds, not {self.initial_s!r}")
        if not self.max_s >= self.initial_s:
            raise ConfigError("max_s", f"must be >= initial_s ({self.initial_s}), not {self.max_s!r}")
        if not self.multiplier >= 1:
            raise ConfigError("multiplier", f"must be >= 1, not {self.multiplier!r}")
        if not 0 <= self.jitter <= 1:
            raise ConfigError("jitter", f"must be in [0, 1], not {self.jitter!r}")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ConfigError("max_attempts", f"must be >= 1 or None, not {self.max_attempts!r}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1`` after ``attempt`` (>= 1) failures."""
        base = min(self.max_s, self.initial_s * self.multiplier ** max(0, attempt - 1))
        return base * (1.0 - self.jitter * self.random())


#: Running client tasks, kept referenced so they are not garbage-collected mid-flight.
_tasks: set[asyncio.Task[None]] = set()


def connect(
    url: str | Sequence[str],
    *,
    subscribe: Sequence[str] | None = None,
    events_only: bool = False,
    open_timeout: float | None = 10.0,
    max_message_size: int | None = 1024 * 1024,
    reconnect: bool | Reconnect = False,
    since: str | None = None,
    on_recovery_failed: Callable[[str], None] | None = None,
    on_state: Callable[[ConnectionState], None] | None = None,
) -> Observable[dict[str, Any]]:
    """A cold Observable of the frames a notification server sends.

    Subscribing opens the connection (in an asyncio task on the running event loop), sends
    ``{"op": "subscribe", "channels": subscribe}`` if ``subscribe`` is given (with
    ``"since": since`` when given), then emits each server frame decoded as a dict::

        {"type": "subscribed", "channels": [...], "cursor"?: "..."}
        {"type": "event", "channel": "orders", "event": {...}, "cursor"?: "..."}
        {"type": "recovery_failed", "reason": "...", "cursor"?: "..."}
        {"type": "pong"} / {"type": "error", "error": "..."}

    With ``events_only=True`` only the ``"event"`` frames are emitted (the others are
    dropped). Disposing the subscription closes the connection with code 1000; nothing is
    emitted after that.

    **Reconnecting** (``reconnect=True`` or a :class:`Reconnect`): when the connection is lost
    (closed with 1001, 1006, 1011, 1012, 1013 or 1014) or cannot be opened (refused, timeout, an
    HTTP 5xx or 429 handshake), the client waits (backoff with jitter) and connects again, then
    subscribes with ``"since"`` = the last cursor it received (from any frame that carries one),
    so the server sends every event missed meanwhile, in order, without duplicates, then the live
    stream. The Observable goes on across connections; it completes on a close with 1000 and
    errors on other close codes (4401, 4403, ...), on a handshake refused with another status, or
    after ``max_attempts`` failed attempts in a row. A server that cannot honour the cursor
    answers ``recovery_failed`` (the events in between are lost: reload the state):
    ``on_recovery_failed(reason)`` is called, and the frame is emitted unless ``events_only``.
    ``reconnect=False`` (the default) keeps one connection: the Observable ends with it.

    Example::

        connect(server.url, subscribe=["orders"], events_only=True, reconnect=True).pipe(
            ops.map(lambda frame: frame["event"]),
        ).subscribe(print)

    Args:
        url: ``ws://host:port[/path]`` (or ``wss://``); or several (instances of one gateway):
            the first is tried first, and each new attempt after a failed or lost connection
            takes the next one, round-robin (a client resumes on any instance).
        subscribe: channels to subscribe to right after connecting (validated now).
        events_only: emit only ``{"type": "event", ...}`` frames.
        open_timeout: seconds allowed for the TCP connect + opening handshake (None: no limit).
        max_message_size: the largest server frame accepted, in bytes.
        reconnect: False, True (a default :class:`Reconnect`) or a :class:`Reconnect`.
        since: a cursor to resume after on the first connection (e.g. kept from an earlier run).
        on_recovery_failed: called with the reason of each ``recovery_failed`` frame.
        on_state: called with each :data:`ConnectionState` change (e.g. to show it in a UI).

    No HTTP proxy is used, whatever the environment says.

    Returns:
        ``Observable[dict]``; it completes when the server closes with 1000 or 1001 (without
        ``reconnect``; with it: 1000), and errors with:

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
        ConfigError: ``url`` is an empty list.
    """
    urls = (url,) if isinstance(url, str) else tuple(url)
    if not urls:
        raise ConfigError("url", "needs at least one URL")
    channels = validate_channels(list(subscribe)) if subscribe is not None else None
    policy = Reconnect() if reconnect is True else (reconnect or None)

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

        session = _Session(
            urls, channels, events_only, open_timeout, max_message_size, observer, is_disposed, policy, since,
            on_recovery_failed, on_state,
        )  # fmt: skip
        task = loop.create_task(session.run())
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


def _retryable_open_failure(exc: BaseException) -> bool:
    if isinstance(exc, InvalidURI):
        return False
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        return status >= 500 or status == 429
    return True


class _Session:
    """One subscription of :func:`connect`: one connection, or one after another (reconnect)."""

    def __init__(
        self,
        urls: tuple[str, ...],
        channels: tuple[str, ...] | None,
        events_only: bool,
        open_timeout: float | None,
        max_message_size: int | None,
        observer: abc.ObserverBase[dict[str, Any]],
        is_disposed: Callable[[], bool],
        policy: Reconnect | None,
        since: str | None,
        on_recovery_failed: Callable[[str], None] | None,
        on_state: Callable[[ConnectionState], None] | None,
    ) -> None:
        self.urls = urls
        self.url = urls[0]
        self._next = 0
        self.channels = channels
        self.events_only = events_only
        self.open_timeout = open_timeout
        self.max_message_size = max_message_size
        self.observer = observer
        self.is_disposed = is_disposed
        self.policy = policy
        #: the last cursor received (or given): what a reconnection resumes after
        self.cursor = since
        self.on_recovery_failed = on_recovery_failed
        self.on_state = on_state

    def _state(self, state: ConnectionState) -> None:
        if self.on_state is not None:
            try:
                self.on_state(state)
            except Exception:
                logger.exception("websocket client: on_state raised")

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self._state("closed")

    async def _run(self) -> None:
        failures = 0
        while True:
            self.url = self.urls[self._next % len(self.urls)]
            self._next += 1
            self._state("connecting")
            try:
                ws = await ws_connect(
                    self.url, open_timeout=self.open_timeout, max_size=self.max_message_size, proxy=None
                )
            except (OSError, TimeoutError, InvalidURI, InvalidHandshake) as exc:
                if self.is_disposed():
                    return
                failures += 1
                policy = self.policy
                if (
                    policy is None
                    or not _retryable_open_failure(exc)
                    or (policy.max_attempts is not None and failures >= policy.max_attempts)
                ):
                    error = WebSocketError(f"cannot connect to {self.url}: {type(exc).__name__}: {exc}")
                    error.__cause__ = exc
                    self.observer.on_error(error)
                    return
                await self._wait(policy, failures, f"{type(exc).__name__}: {exc}")
                continue
            failures = 0
            # Cancelling this task (dispose) interrupts recv(); the finally block then closes with 1000.
            try:
                self._state("open")
                closed = await self._read(ws)
            finally:
                await ws.close(1000)
            if closed is None or self.is_disposed():
                return
            code = closed.rcvd.code if closed.rcvd is not None else 1006
            reason = closed.rcvd.reason if closed.rcvd is not None else ""
            if self.policy is not None and code in RETRY_CLOSE_CODES:
                failures = 1
                await self._wait(self.policy, failures, f"closed with {code} {reason}".rstrip())
                continue
            if code == 1000 or (code == 1001 and self.policy is None):
                self.observer.on_completed()
            else:
                error = ConnectionClosedError(code, reason)
                error.__cause__ = closed
                self.observer.on_error(error)
            return

    async def _wait(self, policy: Reconnect, failures: int, why: str) -> None:
        delay = policy.delay(failures)
        logger.info(
            "websocket client: %s; connecting to %s in %.2fs", why, self.urls[self._next % len(self.urls)], delay
        )
        self._state("reconnecting")
        await asyncio.sleep(delay)

    async def _read(self, ws: ClientConnection) -> ConnectionClosed | None:
        """Read until the connection closes (returns how) or the stream ended here (None:
        errored on a bad frame or a raising observer, or disposed)."""
        observer, is_disposed = self.observer, self.is_disposed
        try:
            if self.channels is not None:
                await ws.send(encode_subscribe(self.channels, self.cursor), text=True)
            while True:
                data = await ws.recv()
                if is_disposed():
                    return None
                try:
                    frame = decode_server_frame(data)
                except (DecodeError, ValidationError) as exc:
                    observer.on_error(exc)
                    return None
                kind = frame["type"]
                cursor = frame.get("cursor")
                if isinstance(cursor, str):
                    self.cursor = cursor
                if kind == "recovery_failed" and self.on_recovery_failed is not None:
                    try:
                        self.on_recovery_failed(str(frame.get("reason", "")))
                    except Exception as exc:
                        observer.on_error(exc)
                        return None
                if self.events_only and kind != "event":
                    continue
                try:
                    observer.on_next(frame)
                except Exception as exc:  # a user callback raised: it goes to on_error
                    observer.on_error(exc)
                    return None
                if is_disposed():
                    return None
        except ConnectionClosed as exc:
            if is_disposed():
                return None
            return exc
