"""Build :class:`~reactive_services.adapters.Message` values for tests, as a broker source would."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reactive_services.adapters import Headers, Message, encode_key, encode_value

__all__ = ["make_message"]

_UNSET: Any = object()


def make_message(
    value: Any = None,
    *,
    topic: str = "t",
    partition: int = 0,
    offset: int = 0,
    key: str | bytes | None = None,
    headers: Headers | Mapping[str, str | bytes] | None = None,
    timestamp_ms: int = 0,
    raw: bytes | None = _UNSET,
) -> Message:
    """A :class:`~reactive_services.adapters.Message` as a broker source delivers it.

    Example::

        >>> m = make_message({"id": 7}, key="order-7", offset=3, headers={"trace": "abc"})
        >>> (m.topic, m.partition, m.offset, m.key, m.value, m.raw)
        ('t', 0, 3, b'order-7', {'id': 7}, b'{"id":7}')
        >>> m.header("trace")
        b'abc'

    Args:
        value: the decoded value (``Message.value``); ``bytes`` stand for a source read with
            ``decode=None``.
        topic: the topic name.
        partition: the partition number (>= 0).
        offset: the offset within the partition (>= 0).
        key: the record key; ``str`` is UTF-8 encoded, as the brokers' ``emit`` does.
        headers: ``[(name, bytes), ...]`` or a mapping ``{name: str | bytes}`` (``str``
            values are UTF-8 encoded).
        timestamp_ms: the record timestamp, milliseconds since the Unix epoch.
        raw: the undecoded value bytes; by default ``value`` encoded as a broker's ``emit``
            encodes it (JSON with orjson; ``bytes`` as they are; ``None`` stays ``None``).

    Returns:
        A fresh Message (nothing tracked on it yet).

    Raises:
        TypeError: ``raw`` is not given and ``value`` is not JSON-serialisable, or ``key``
            is not ``str``, ``bytes`` or ``None``.
        ValueError: ``partition`` or ``offset`` is negative.
    """
    if partition < 0 or offset < 0:
        raise ValueError(f"partition and offset must be >= 0, got partition={partition!r}, offset={offset!r}")
    if isinstance(headers, Mapping):
        pairs: Headers = [(name, v.encode("utf-8") if isinstance(v, str) else v) for name, v in headers.items()]
    else:
        pairs = tuple(headers or ())
    return Message(
        topic=topic,
        partition=partition,
        offset=offset,
        key=encode_key(key),
        value=value,
        headers=pairs,
        timestamp_ms=timestamp_ms,
        raw=encode_value(value) if raw is _UNSET else raw,
    )
