"""The pure part of the Kafka adapter: records to messages, settings to aiokafka arguments.

No asyncio and no network here; everything is tested with plain values
(``tests/adapters/test_kafka_codec.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from reactive_services.errors import ConfigError

from .._codec import decode_json
from .._message import Headers, Message, RecordMetadata

__all__ = [
    "ConsumerRecordLike",
    "headers_from_kafka",
    "headers_to_kafka",
    "message_from_record",
    "parse_bootstrap",
    "record_metadata",
    "resolve_decoder",
    "topic_list",
]


class ConsumerRecordLike(Protocol):
    """The fields of ``aiokafka.structs.ConsumerRecord`` this module reads."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]]


def _raw(raw: bytes | None) -> bytes | None:
    return raw


def resolve_decoder(decode: Any) -> Callable[[bytes | None], Any]:
    """The value decoder for a source's ``decode`` argument.

    ``"json"`` -> :func:`reactive_services.adapters._codec.decode_json`; ``None`` -> identity (raw bytes);
    a callable ``bytes | None -> Any`` is returned as is.

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


def headers_from_kafka(headers: Iterable[tuple[str, bytes | None]] | None) -> list[tuple[str, bytes]]:
    """Record headers as ``[(name, bytes), ...]``; a null header value becomes ``b""``."""
    if not headers:
        return []
    return [(name, b"" if value is None else value) for name, value in headers]


def headers_to_kafka(headers: Headers | None) -> list[tuple[str, bytes]] | None:
    """Headers for ``AIOKafkaProducer.send``: a list of ``(str, bytes)``, or None when empty.

    Raises:
        TypeError: a name is not ``str`` or a value is not ``bytes``.
    """
    if not headers:
        return None
    out: list[tuple[str, bytes]] = []
    for name, value in headers:
        if not isinstance(name, str) or not isinstance(value, (bytes, bytearray)):
            raise TypeError(f"headers must be (str, bytes) pairs, got ({name!r}, {value!r})")
        out.append((name, bytes(value)))
    return out


def message_from_record(record: ConsumerRecordLike, value: Any) -> Message:
    """A :class:`Message` for an aiokafka ``ConsumerRecord`` whose value decoded to ``value``.

    ``raw`` keeps the undecoded value bytes; ``headers`` become ``[(str, bytes), ...]``;
    ``timestamp_ms`` is the record timestamp (milliseconds since the Unix epoch).
    """
    headers = record.headers
    # Positional arguments: this runs once per record on the hot path.
    return Message(
        record.topic,
        record.partition,
        record.offset,
        record.key,
        value,
        headers_from_kafka(headers) if headers else [],
        record.timestamp,
        record.value,
    )


def record_metadata(md: Any) -> RecordMetadata:
    """A :class:`RecordMetadata` from aiokafka's producer ``RecordMetadata``."""
    return RecordMetadata(topic=md.topic, partition=md.partition, offset=md.offset, timestamp_ms=md.timestamp)


def parse_bootstrap(bootstrap_servers: str) -> list[tuple[str, int]]:
    """``"host:port[,host:port...]"`` as ``[(host, port), ...]``.

    Raises:
        ConfigError: empty, a missing or non-numeric port, or a port outside 1..65535
            (key ``"bootstrap_servers"``).
    """
    if not isinstance(bootstrap_servers, str) or not bootstrap_servers.strip():
        raise ConfigError("bootstrap_servers", "must be a non-empty 'host:port[,host:port]' string")
    out: list[tuple[str, int]] = []
    for part in bootstrap_servers.split(","):
        part = part.strip()
        host, sep, port_s = part.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port_s.isdigit() or not 0 < int(port_s) < 65536:
            raise ConfigError("bootstrap_servers", f"{part!r} is not host:port")
        out.append((host, int(port_s)))
    return out


def topic_list(topics: str | Sequence[str]) -> list[str]:
    """``topics`` as a non-empty list of names.

    Raises:
        ConfigError: no topic, or an empty name (key ``"topics"``).
    """
    names = [topics] if isinstance(topics, str) else list(topics)
    if not names or not all(isinstance(t, str) and t for t in names):
        raise ConfigError("topics", f"need one or more non-empty topic names, got {topics!r}")
    return names
