"""The pure part of the Kafka adapter: records to messages, settings, errors and metadata answers.

No asyncio and no network here; everything is tested with plain values
(``tests/adapters/test_kafka_codec.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, NodeNotReadyError, RequestTimedOutError

from reactive_services.errors import BrokerUnavailableError, ConfigError, PublishError

from .._message import Message, RecordMetadata

__all__ = [
    "RESERVED_CONSUMER_OPTIONS",
    "UNAVAILABLE",
    "ConsumerRecordLike",
    "KafkaSettings",
    "fmt_offsets",
    "headers_from_kafka",
    "message_from_record",
    "parse_bootstrap",
    "publish_failed",
    "record_metadata",
    "topics_with_leaders",
    "unavailable",
]

#: aiokafka errors that mean "the cluster did not answer" (mapped to BrokerUnavailableError).
UNAVAILABLE = (KafkaConnectionError, NodeNotReadyError, KafkaTimeoutError, RequestTimedOutError, OSError, TimeoutError)

#: AIOKafkaConsumer arguments a source sets itself; ``consumer_options`` may not override them.
RESERVED_CONSUMER_OPTIONS = frozenset(
    {
        "bootstrap_servers",
        "group_id",
        "enable_auto_commit",
        "auto_offset_reset",
        "loop",
        "key_deserializer",
        "value_deserializer",
    }
)


class ConsumerRecordLike(Protocol):
    """The fields of ``aiokafka.structs.ConsumerRecord`` this module reads."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]]


def headers_from_kafka(headers: Iterable[tuple[str, bytes | None]] | None) -> list[tuple[str, bytes]]:
    """Record headers as ``[(name, bytes), ...]``; a null header value becomes ``b""``."""
    if not headers:
        return []
    return [(name, b"" if value is None else value) for name, value in headers]


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
    return RecordMetadata(md.topic, md.partition, md.offset, md.timestamp)


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


@dataclass(frozen=True)
class KafkaSettings:
    """The checked settings of a :class:`~reactive_services.adapters.kafka.KafkaBroker` (see its arguments).

    Raises:
        ConfigError: a malformed ``bootstrap_servers``, a non-positive timeout or size, or a
            ``consumer_options`` key the source sets itself (the key names the setting).
    """

    bootstrap_servers: str
    client_id: str = "reactive-services"
    connect_timeout_s: float = 10.0
    request_timeout_s: float = 10.0
    max_batch: int = 500
    commit_interval_s: float = 1.0
    poll_timeout_s: float = 0.2
    revoke_timeout_s: float = 5.0
    consumer_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        parse_bootstrap(self.bootstrap_servers)
        for name in ("connect_timeout_s", "request_timeout_s", "poll_timeout_s", "revoke_timeout_s"):
            val = getattr(self, name)
            if not val > 0:
                raise ConfigError(name, f"must be > 0 seconds, got {val!r}")
            object.__setattr__(self, name, float(val))
        if not isinstance(self.max_batch, int) or self.max_batch < 1:
            raise ConfigError("max_batch", f"must be a positive int, got {self.max_batch!r}")
        if not self.commit_interval_s >= 0:
            raise ConfigError("commit_interval_s", f"must be >= 0 seconds, got {self.commit_interval_s!r}")
        object.__setattr__(self, "commit_interval_s", float(self.commit_interval_s))
        reserved = sorted(RESERVED_CONSUMER_OPTIONS.intersection(self.consumer_options or {}))
        if reserved:
            raise ConfigError("consumer_options", f"{', '.join(reserved)} cannot be overridden")
        object.__setattr__(self, "consumer_options", dict(self.consumer_options or {}))

    @property
    def request_timeout_ms(self) -> int:
        """``request_timeout_s`` in milliseconds, as aiokafka takes it."""
        return int(self.request_timeout_s * 1000)


def unavailable(bootstrap_servers: str, exc: BaseException, timeout_s: float) -> BrokerUnavailableError:
    """The :class:`BrokerUnavailableError` for a failure to reach the cluster within ``timeout_s`` seconds."""
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, KafkaTimeoutError, RequestTimedOutError)):
        reason = f"no answer within {timeout_s:g} s"
    elif isinstance(exc, KafkaConnectionError):
        reason = "no broker answered (connection refused or closed)"
    else:
        reason = f"{type(exc).__name__}: {exc}"
    return BrokerUnavailableError(f"cannot reach Kafka at {bootstrap_servers}: {reason}")


def topics_with_leaders(described: Iterable[Mapping[str, Any]]) -> list[str]:
    """The topics of a ``describe_topics`` answer that exist and whose partitions all have a leader."""
    return [
        t["topic"]
        for t in described
        if t["error_code"] == 0
        and t["partitions"]
        and all(p["error_code"] == 0 and p["leader"] >= 0 for p in t["partitions"])
    ]


def fmt_offsets(offsets: Mapping[Any, int]) -> str:
    """``{TopicPartition: offset}`` as ``"topic[partition]=offset, ..."`` for logs."""
    return ", ".join(f"{tp.topic}[{tp.partition}]={off}" for tp, off in sorted(offsets.items()))


def publish_failed(topic: str, error: BaseException) -> PublishError:
    """The :class:`PublishError` of a record to ``topic`` that the producer refused with ``error``
    (its ``__cause__``)."""
    failure = PublishError(f"publishing to {topic!r} failed: {type(error).__name__}: {error}")
    failure.__cause__ = error
    return failure
