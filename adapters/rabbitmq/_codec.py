"""The pure part of the RabbitMQ adapter: names, arguments and the record <-> AMQP message mapping.

No asyncio and no network here; tested with plain values (``tests/adapters/rabbitmq``).

The mapping (see :class:`~reactive_services.adapters.rabbitmq.RabbitBroker` for why):

- a topic ``T`` is a durable ``direct`` exchange ``T``; its partition ``p`` is the routing key
  ``"p"``; the publisher picks ``p`` from the key as the other brokers do
  (:func:`~reactive_services.adapters._codec.partition_for`);
- consumer group ``G`` reads partition ``p`` of ``T`` from the durable quorum queue
  ``G.T.p`` (:func:`queue_name`), bound to ``T`` with routing key ``"p"``, with single active
  consumer on, so one member of the group at a time reads a partition, in order;
- a record's key and timestamp travel in the headers :data:`KEY_HEADER` and
  :data:`TIMESTAMP_HEADER`; its other headers as AMQP byte arrays (a name given more than once:
  an array of them);
- a record that no queue is bound for goes to the alternate exchange :data:`UNROUTED` and
  waits in the queue of that name (nothing is dropped silently).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from reactive_services.errors import ConfigError

from .._message import Message

__all__ = [
    "KEY_HEADER",
    "MAX_NAME_BYTES",
    "NAMES_HEADER",
    "NULL_HEADER",
    "TIMESTAMP_HEADER",
    "UNROUTED",
    "RabbitSettings",
    "amqp_headers",
    "exchange_arguments",
    "message_of",
    "queue_arguments",
    "queue_name",
    "record_headers",
]

#: The header a record's key travels in (AMQP byte array), absent for a record without a key.
KEY_HEADER = "rs-key"

#: The header a record's timestamp travels in: milliseconds since the Unix epoch (AMQP long).
TIMESTAMP_HEADER = "rs-ts"

#: The header that marks a record without a value (a tombstone; its body is empty).
NULL_HEADER = "rs-null"

#: The header listing a record's header names in their order (an AMQP table's order is the
#: server's own), a name once per value.
NAMES_HEADER = "rs-names"

#: The alternate exchange of every topic exchange, and the quorum queue bound to it: records
#: published to a topic (or a partition of it) that no consumer group's queue is bound to yet.
UNROUTED = "rs.unrouted"

#: The longest exchange or queue name RabbitMQ accepts, in bytes (UTF-8).
MAX_NAME_BYTES = 255


@dataclass(frozen=True, slots=True)
class RabbitSettings:
    """The checked settings of a :class:`~reactive_services.adapters.rabbitmq.RabbitBroker`.

    Attributes:
        url: the AMQP URL, ``amqp://user:password@host:port/vhost``.
        partitions: partitions (routing keys, one queue per group each) of a topic that
            ``create_topics`` did not create in this process.
        prefetch: messages RabbitMQ may send a source's channel of one partition before they
            are acknowledged (``basic.qos``): the backpressure bound.
        max_batch: records a source hands over between two yields to the event loop (and the
            most records in one ``Batch`` of ``source_batches``).
        connect_timeout_s: seconds to connect (and to declare) before ``BrokerUnavailableError``.
        publish_timeout_s: seconds to wait for a publisher confirm before ``PublishError``.
        reconnect_timeout_s: seconds a source keeps trying to reconnect after it lost its
            connection, before its stream ends with ``BrokerUnavailableError``.
        queue_expires_s: a group's queue is deleted by RabbitMQ after this many seconds without
            a consumer (``x-expires``; None: kept for ever), as Kafka forgets a group's offsets.
        delivery_limit: deliveries of one message (``x-delivery-limit``) after which RabbitMQ
            moves it to the dead-letter exchange ``<topic>.DLT`` (a record that crashes its
            consumer every time); None: no limit.
    """

    url: str
    partitions: int = 1
    prefetch: int = 256
    max_batch: int = 500
    connect_timeout_s: float = 10.0
    publish_timeout_s: float = 30.0
    reconnect_timeout_s: float = 60.0
    queue_expires_s: float | None = None
    delivery_limit: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url.startswith(("amqp://", "amqps://")):
            raise ConfigError("url", f"must be an amqp:// or amqps:// URL, got {self.url!r}")
        for name in ("partitions", "prefetch", "max_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(name, f"must be an int >= 1, got {value!r}")
        for name in ("connect_timeout_s", "publish_timeout_s", "reconnect_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigError(name, f"must be > 0 seconds, got {value!r}")
        if self.queue_expires_s is not None and not (
            isinstance(self.queue_expires_s, int | float) and self.queue_expires_s >= 1
        ):
            raise ConfigError("queue_expires_s", f"must be >= 1 second or None, got {self.queue_expires_s!r}")
        limit = self.delivery_limit
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ConfigError("delivery_limit", f"must be an int >= 1 or None, got {limit!r}")


def _check_name(kind: str, name: str) -> str:
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise ConfigError(kind, f"{name!r} is over RabbitMQ's {MAX_NAME_BYTES} bytes")
    if name.startswith("amq."):
        raise ConfigError(kind, f"{name!r}: names starting with 'amq.' are RabbitMQ's own")
    return name


def queue_name(group_id: str, topic: str, partition: int) -> str:
    """The quorum queue consumer group ``group_id`` reads partition ``partition`` of ``topic`` from.

    Raises:
        ConfigError: the name is over :data:`MAX_NAME_BYTES` or starts with ``amq.`` (key ``group_id``).
    """
    return _check_name("group_id", f"{group_id}.{topic}.{partition}")


def exchange_arguments(partitions: int) -> dict[str, Any]:
    """The arguments of a topic's exchange: the alternate exchange, and its partitions (for
    people looking at it; RabbitMQ does not check them)."""
    return {"alternate-exchange": UNROUTED, "x-rs-partitions": partitions}


def queue_arguments(settings: RabbitSettings, topic: str) -> dict[str, Any]:
    """The arguments of a group's queue of ``topic``: quorum, single active consumer, and the
    settings' expiry and delivery limit (with ``<topic>.DLT`` as its dead-letter exchange)."""
    args: dict[str, Any] = {"x-queue-type": "quorum", "x-single-active-consumer": True}
    if settings.queue_expires_s is not None:
        args["x-expires"] = int(settings.queue_expires_s * 1000)
    if settings.delivery_limit is not None:
        args["x-delivery-limit"] = settings.delivery_limit
        args["x-dead-letter-exchange"] = topic + ".DLT"
    return args


_RESERVED = (KEY_HEADER, TIMESTAMP_HEADER, NULL_HEADER, NAMES_HEADER)


def amqp_headers(
    key: bytes | None, headers: Iterable[tuple[str, bytes]], timestamp_ms: int, *, null: bool = False
) -> dict[str, Any]:
    """A record's key, headers and timestamp as an AMQP header table (``null``: the record has
    no value, :data:`NULL_HEADER`).

    Byte values become AMQP byte arrays (``bytearray``); a name given more than once becomes an
    array of them, in order; with more than one header, :data:`NAMES_HEADER` keeps their order.

    Raises:
        ValueError: a header uses a reserved name (:data:`KEY_HEADER`, :data:`TIMESTAMP_HEADER`,
            :data:`NULL_HEADER`).
    """
    table: dict[str, Any] = {}
    names: list[str] = []
    for name, value in headers:
        names.append(name)
        if name in _RESERVED:
            raise ValueError(f"header name {name!r} is reserved by the RabbitMQ adapter")
        if name in table:
            previous = table[name]
            table[name] = [*previous, bytearray(value)] if isinstance(previous, list) else [previous, bytearray(value)]
        else:
            table[name] = bytearray(value)
    if key is not None:
        table[KEY_HEADER] = bytearray(key)
    table[TIMESTAMP_HEADER] = timestamp_ms
    if len(names) > 1:
        table[NAMES_HEADER] = names
    if null:
        table[NULL_HEADER] = True
    return table


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if value is None:
        return b""
    if isinstance(value, str):
        return value.encode("utf-8")
    return str(value).encode("utf-8")  # a number or a flag set by another client


def record_headers(table: Mapping[str, Any] | None) -> tuple[bytes | None, list[tuple[str, bytes]], int, bool]:
    """The ``(key, headers, timestamp_ms, null)`` of a delivered message's header table (see
    :func:`amqp_headers`); RabbitMQ's own ``x-`` headers (e.g. ``x-death``) are left out, a
    missing timestamp is 0."""
    if not table:
        return None, [], 0, False
    key: bytes | None = None
    timestamp_ms = 0
    null = False
    out: list[tuple[str, bytes]] = []
    for name, value in table.items():
        if name == KEY_HEADER:
            key = _as_bytes(value)
        elif name == TIMESTAMP_HEADER:
            timestamp_ms = int(value)
        elif name == NULL_HEADER:
            null = bool(value)
        elif name == NAMES_HEADER or name.startswith("x-"):
            continue
        elif isinstance(value, list):
            out.extend((name, _as_bytes(v)) for v in value)
        else:
            out.append((name, _as_bytes(value)))
    order = table.get(NAMES_HEADER)
    if isinstance(order, list) and sorted(map(str, order)) == sorted(name for name, _ in out):
        by_name: dict[str, list[bytes]] = {}
        for name, data in out:
            by_name.setdefault(name, []).append(data)
        out = [(str(name), by_name[str(name)].pop(0)) for name in order]
    return key, out, timestamp_ms, null


def message_of(topic: str, partition: int, offset: int, table: Mapping[str, Any] | None, body: bytes) -> Message:
    """The :class:`Message` of a delivered AMQP message (value not decoded yet).

    ``offset`` is its position in this subscription's delivery of the partition (the channel's
    delivery tag minus one), not a position in a log: RabbitMQ has none.
    """
    key, headers, timestamp_ms, null = record_headers(table)
    return Message(topic, partition, offset, key, None, headers, timestamp_ms, None if null else body)
