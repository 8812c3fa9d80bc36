"""The notification protocol's frames: parse and validate client frames, build server frames.

Pure functions: no asyncio, no sockets; tested with ``str`` / ``bytes`` alone. The protocol
itself is described in the package docstring (:mod:`reactive_services.adapters.websocket`).

Server frames are built as UTF-8 JSON ``bytes`` (orjson) so that the server can send them as
text frames without a decode / re-encode round trip (``send(data, text=True)``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

import orjson

from reactive_services.errors import DecodeError, ValidationError

from .._codec import dumps

__all__ = [
    "CLIENT_OPS",
    "MAX_CHANNELS",
    "MAX_CHANNEL_LENGTH",
    "MAX_CURSOR_LENGTH",
    "ClientFrame",
    "decode_server_frame",
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

#: Longest channel name accepted, in characters.
MAX_CHANNEL_LENGTH = 100
#: Most channels one connection may be subscribed to at once (and may name in one frame).
MAX_CHANNELS = 100
#: Longest ``since`` cursor accepted, in characters.
MAX_CURSOR_LENGTH = 16 * 1024

#: The ``op`` values a client may send.
ClientOp = Literal["subscribe", "unsubscribe", "ping"]
CLIENT_OPS: tuple[ClientOp, ...] = ("subscribe", "unsubscribe", "ping")


@dataclass(frozen=True, slots=True)
class ClientFrame:
    """One valid client -> server frame.

    Attributes:
        op: ``"subscribe"``, ``"unsubscribe"`` or ``"ping"``.
        channels: the channel names of a (un)subscribe, de-duplicated in the order given;
            ``()`` for ``"ping"``.
        since: a subscribe's ``"since"`` cursor (resume after it), else None.
    """

    op: ClientOp
    channels: tuple[str, ...] = ()
    since: str | None = None


def validate_channels(value: object, *, max_channels: int = MAX_CHANNELS) -> tuple[str, ...]:
    """Check a ``channels`` value and return it as a de-duplicated tuple (first occurrence kept).

    A valid value is a list (or tuple) of at most ``max_channels`` non-empty strings of at most
    :data:`MAX_CHANNEL_LENGTH` characters each.

    Raises:
        ValidationError: the value is not a list of strings, a name is empty or too long, or
            there are too many names; the message names the offending value.
    """
    if not isinstance(value, (list, tuple)):
        raise ValidationError(f"'channels' must be a list of strings, not {type(value).__name__}")
    seen: dict[str, None] = {}
    for name in value:
        if not isinstance(name, str):
            raise ValidationError(f"'channels' must be a list of strings; found {type(name).__name__} {name!r}")
        if not name:
            raise ValidationError("channel names must be non-empty strings")
        if len(name) > MAX_CHANNEL_LENGTH:
            raise ValidationError(
                f"channel name {name[:20]!r}... is {len(name)} characters long;"
                f" at most {MAX_CHANNEL_LENGTH} are allowed"
            )
        seen[name] = None
    if len(seen) > max_channels:
        raise ValidationError(f"too many channels: {len(seen)} given, at most {max_channels} allowed")
    return tuple(seen)


def parse_client_frame(data: str | bytes) -> ClientFrame:
    """Decode and validate one client -> server frame.

    Args:
        data: the frame payload (a text frame arrives as ``str``; ``bytes`` must be UTF-8 JSON).

    Returns:
        The validated :class:`ClientFrame`.

    Raises:
        DecodeError: ``data`` is not JSON.
        ValidationError: not a JSON object, ``op`` missing or unknown, ``channels`` invalid
            (see :func:`validate_channels`), or a ``since`` that is not a non-empty string of at
            most :data:`MAX_CURSOR_LENGTH` characters (or that is not on a subscribe).
    """
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"frame is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ValidationError(f"frame must be a JSON object, not {_json_type(obj)}")
    op = obj.get("op")
    if op not in CLIENT_OPS:
        if op is None:
            raise ValidationError("frame has no 'op'; expected one of subscribe, unsubscribe, ping")
        raise ValidationError(f"unknown op {op!r}; expected one of subscribe, unsubscribe, ping")
    if op == "ping":
        return ClientFrame("ping")
    if "channels" not in obj:
        raise ValidationError(f"'{op}' needs 'channels': a list of strings")
    channels = validate_channels(obj["channels"])
    since = obj.get("since")
    if since is not None:
        if op != "subscribe":
            raise ValidationError("'since' is only allowed on subscribe")
        if not isinstance(since, str) or not since or len(since) > MAX_CURSOR_LENGTH:
            raise ValidationError(
                f"'since' must be a cursor: a non-empty string of at most {MAX_CURSOR_LENGTH} characters"
            )
    return ClientFrame(cast(ClientOp, op), channels, since)


def _json_type(obj: object) -> str:
    if isinstance(obj, list):
        return "an array"
    if isinstance(obj, str):
        return "a string"
    if obj is None:
        return "null"
    if isinstance(obj, bool):
        return "a boolean"
    return "a number"


# Server -> client frames (UTF-8 JSON bytes)


def encode_subscribed(channels: Iterable[str], cursor: str | None = None) -> bytes:
    """``{"type": "subscribed", "channels": [...]}`` with the channels sorted, plus ``"cursor"``
    when given."""
    frame: dict[str, Any] = {"type": "subscribed", "channels": sorted(channels)}
    if cursor is not None:
        frame["cursor"] = cursor
    return orjson.dumps(frame)


def encode_event(channel: str, event: Any, trace: Mapping[str, str] | None = None, cursor: str | None = None) -> bytes:
    """``{"type": "event", "channel": channel, "event": event}``, plus ``"cursor": cursor`` when
    given and ``"trace": {"traceparent": ..., "tracestate"?: ...}`` (W3C Trace Context) when
    ``trace`` is given and not empty.

    Raises:
        TypeError: ``event`` is not JSON-serialisable by orjson.
    """
    frame: dict[str, Any] = {"type": "event", "channel": channel, "event": event}
    if cursor is not None:
        frame["cursor"] = cursor
    if trace:
        frame["trace"] = trace
    try:
        return dumps(frame)  # kept for slow clients
    except orjson.JSONEncodeError as exc:
        raise TypeError(f"event is not JSON-serialisable: {exc}") from exc


_PONG = orjson.dumps({"type": "pong"})


def encode_pong() -> bytes:
    """``{"type": "pong"}``."""
    return _PONG


def encode_error(message: str) -> bytes:
    """``{"type": "error", "error": message}``."""
    return orjson.dumps({"type": "error", "error": message})


def encode_recovery_failed(reason: str, cursor: str | None = None) -> bytes:
    """``{"type": "recovery_failed", "reason": reason}``, plus ``"cursor"`` (where the live
    stream that follows starts) when given."""
    frame: dict[str, Any] = {"type": "recovery_failed", "reason": reason}
    if cursor is not None:
        frame["cursor"] = cursor
    return orjson.dumps(frame)


# Client -> server frames, for clients written in Python


def encode_subscribe(channels: Iterable[str], since: str | None = None) -> bytes:
    """``{"op": "subscribe", "channels": [...]}`` (channels in the order given), plus
    ``"since": cursor`` when given."""
    frame: dict[str, Any] = {"op": "subscribe", "channels": list(channels)}
    if since is not None:
        frame["since"] = since
    return orjson.dumps(frame)


def encode_unsubscribe(channels: Iterable[str]) -> bytes:
    """``{"op": "unsubscribe", "channels": [...]}`` (channels in the order given)."""
    return orjson.dumps({"op": "unsubscribe", "channels": list(channels)})


def decode_server_frame(data: str | bytes) -> dict[str, Any]:
    """Decode one server -> client frame.

    Returns:
        The frame as a dict with at least a string ``"type"`` key.

    Raises:
        DecodeError: ``data`` is not JSON.
        ValidationError: not a JSON object with a string ``"type"``.
    """
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"server frame is not JSON: {exc}") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise ValidationError("server frame must be a JSON object with a string 'type'")
    return obj
