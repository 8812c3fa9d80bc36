"""Pure codecs shared by every adapter: values and keys to bytes and back, dead-letter headers.

No I/O and no asyncio here; tested with bytes alone.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from reactive_services.errors import ConfigError, DecodeError

from ._message import Headers, HeadersIn, Message

__all__ = [
    "DLT_SUFFIX",
    "dead_letter_headers",
    "dead_letter_topic",
    "decode_json",
    "dumps",
    "encode_headers",
    "encode_key",
    "encode_value",
    "headers_to_dict",
    "partition_for",
    "resolve_decoder",
]

#: Suffix of a dead-letter topic: records of ``orders`` that cannot be handled go to ``orders.DLT``.
DLT_SUFFIX = ".DLT"


#: Below this many bytes, :func:`dumps` copies orjson's output into an object of its own size.
COMPACT_BELOW = 4096


def dumps(value: Any) -> bytes:
    """``orjson.dumps(value)``, in memory of its own size when it is small.

    orjson writes into a 4 KiB buffer and shrinks it in place; with glibc's allocator the
    page stays taken by that one value, so each *kept* output under 4 KiB costs a page of
    memory and a page fault (measured here: 200,000 records of 200 B kept after
    ``orjson.dumps`` took 786 MB of RSS and 200,000 minor faults; copied, 48 MB and 12,000).
    A copy of that size comes from CPython's small-object allocator, so this pays about
    0.1 us per value for values a broker, a queue or a batch keeps (stored records, queued
    publishes, websocket frames waiting for a slow client).

    Raises:
        orjson.JSONEncodeError: ``value`` is not JSON-serialisable (a ``TypeError`` subclass).
    """
    out = orjson.dumps(value, default=json_default)
    return bytes(memoryview(out)) if len(out) < COMPACT_BELOW else out


def json_default(value: Any) -> Any:
    """orjson's ``default``: what a value orjson does not know is written as.

    A pydantic model (anything with ``model_dump``) is written as ``model_dump(mode="json",
    by_alias=True)`` (its aliases and serialisers apply, so the same model reads it back);
    dataclasses, ``TypedDict`` values, datetimes and UUIDs orjson writes itself.

    Raises:
        TypeError: anything else (orjson reports it as not JSON-serialisable).
    """
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json", by_alias=True)
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def encode_value(value: Any) -> bytes | None:
    """Serialise a value for the wire.

    ``bytes`` pass through unchanged, ``None`` stays ``None`` (a tombstone), anything else
    is encoded as JSON with orjson (dataclasses, datetimes and numpy arrays included; pydantic
    models through :func:`json_default`).

    Raises:
        TypeError: the value is not JSON-serialisable.
    """
    if value is None or isinstance(value, bytes):
        return value
    try:
        return dumps(value)
    except orjson.JSONEncodeError as exc:
        raise TypeError(f"value is not JSON-serialisable: {exc}") from exc


def encode_key(key: str | bytes | None) -> bytes | None:
    """A record key as bytes: ``str`` is UTF-8 encoded, ``bytes`` and ``None`` pass through."""
    if key is None or isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode("utf-8")
    raise TypeError(f"key must be str, bytes or None, not {type(key).__name__}")


def encode_headers(headers: HeadersIn | None) -> tuple[tuple[str, bytes], ...]:
    """Record headers as ``((name, bytes), ...)``, the one shape every broker stores.

    Accepted: ``None``; a mapping ``{name: value}``; or a sequence of ``(name, value)`` pairs
    (a name may repeat). A name is a ``str``; a value is ``bytes`` (kept), ``str`` (UTF-8
    encoded) or ``None`` (an empty value, as Kafka's null header values are read back).

    Raises:
        TypeError: anything else; the message names the offending header, e.g. ``headers[0]
            must be a (name, value) pair, got 'trace-id'`` (a dict's key iterated as a pair).
    """
    if headers is None:
        return ()
    if isinstance(headers, Mapping):
        pairs: list[Any] = list(headers.items())
    elif isinstance(headers, (str, bytes, bytearray)) or not hasattr(headers, "__iter__"):
        raise TypeError(f"headers must be a mapping or a sequence of (name, value) pairs, got {type(headers).__name__}")
    else:
        pairs = list(headers)
    out: list[tuple[str, bytes]] = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise TypeError(f"headers[{i}] must be a (name, value) pair, got {pair!r}")
        name, value = pair
        if not isinstance(name, str):
            raise TypeError(f"header {i} name must be a str, got {name!r}")
        if isinstance(value, bytes):
            out.append((name, value))
        elif isinstance(value, bytearray | memoryview):
            out.append((name, bytes(value)))
        elif isinstance(value, str):
            out.append((name, value.encode("utf-8")))
        elif value is None:
            out.append((name, b""))
        else:
            raise TypeError(f"header {name!r} value must be bytes, str or None, got {type(value).__name__}")
    return tuple(out)


def decode_json(raw: bytes | None) -> Any:
    """Decode a record value as JSON.

    Raises:
        DecodeError: ``raw`` is ``None`` (a tombstone) or not valid UTF-8 JSON; the
            message says why and where (orjson's position).
    """
    if raw is None:
        raise DecodeError("record has no value (tombstone)")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not JSON: {exc}") from exc


def _raw(raw: bytes | None) -> bytes | None:
    return raw


def resolve_decoder(decode: Any) -> Callable[[bytes | None], Any]:
    """The value decoder for a source's ``decode`` argument (the one place every broker resolves it).

    ``"json"`` -> :func:`decode_json`; ``None`` -> identity (the raw bytes); a callable
    ``bytes | None -> Any`` is returned as is (it raises on bad input, and the record is then
    dead-lettered like a record that is not JSON).

    Raises:
        ConfigError: ``decode`` is none of those (key ``"decode"``).
    """
    if decode == "json":
        return decode_json
    if decode is None:
        return _raw
    if callable(decode):
        return decode  # type: ignore[no-any-return]
    raise ConfigError("decode", f'must be "json", None or a callable, not {decode!r}')


def dead_letter_topic(topic: str) -> str:
    """The dead-letter topic of ``topic``: ``<topic>.DLT``."""
    return topic + DLT_SUFFIX


#: Characters of a dead letter's ``dlt.reason`` header, at most (the rest is cut, and counted).
MAX_REASON_CHARS = 2000


def dead_letter_headers(message: Message, error: BaseException | str, *, attempts: int = 1) -> list[tuple[str, bytes]]:
    """Headers for a record sent to a dead-letter topic.

    The original headers are kept, then these are appended (all UTF-8 text):
    ``dlt.original.topic``, ``dlt.original.partition``, ``dlt.original.offset``,
    ``dlt.attempts``, ``dlt.exception.type`` and ``dlt.reason`` (the exception message, cut
    after :data:`MAX_REASON_CHARS` characters).
    """
    if isinstance(error, BaseException):
        exc_type, reason = type(error).__name__, str(error) or type(error).__name__
    else:
        exc_type, reason = "Error", error
    if len(reason) > MAX_REASON_CHARS:  # a dead letter must stay publishable (the broker's size limit)
        reason = f"{reason[:MAX_REASON_CHARS]}... ({len(reason) - MAX_REASON_CHARS} more characters)"
    out: list[tuple[str, bytes]] = [(k, v) for k, v in message.headers]
    out += [
        ("dlt.original.topic", message.topic.encode()),
        ("dlt.original.partition", str(message.partition).encode()),
        ("dlt.original.offset", str(message.offset).encode()),
        ("dlt.attempts", str(attempts).encode()),
        ("dlt.exception.type", exc_type.encode()),
        ("dlt.reason", reason.encode("utf-8", "replace")),
    ]
    return out


def headers_to_dict(headers: Headers | None) -> dict[str, str]:
    """Headers as a ``{name: text}`` dict (later duplicates win; bytes decoded as UTF-8)."""
    return {k: v.decode("utf-8", "replace") for k, v in headers or ()}


def partition_for(key: bytes | None, partitions: int, round_robin: int) -> int:
    """The partition of a record: CRC-32 of the key (same key, same partition), else round robin.

    Args:
        key: the key bytes, or None.
        partitions: how many partitions the topic has (>= 1).
        round_robin: a counter that increases with each keyless record.
    """
    if key is None:
        return round_robin % partitions
    return zlib.crc32(key) % partitions
