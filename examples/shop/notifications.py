"""Notification service: shop and log events pushed to websocket clients by channel.

It consumes the events of the other services and turns each into a
:class:`~reactive_services.adapters.websocket.Notification` on a channel; the
:class:`~reactive_services.adapters.websocket.NotificationHub` Observer at the end of the pipeline fans it out
to the websocket clients subscribed to that channel.

=====================  ===========
topic                  channel
=====================  ===========
``order.created``      ``orders``
``order.rejected``     ``orders``
``inventory.updated``  ``inventory``
``stock.low``          ``stock``
``log.stats``          ``logs``
``log.alert``          ``alerts``
=====================  ===========

Each notification's event is ``{"topic": <pattern>, "data": <the event payload>}``, the payload
forwarded as it was received (every key kept).

The shop's events are validated first, each with its model of
:mod:`~reactive_services.examples.shop.messages` (:data:`~reactive_services.examples.shop.messages.EVENTS`:
``order.created``, ``order.rejected``, ``inventory.updated``, ``stock.low``); one that does
not validate is not forwarded: it goes to the ``dead_letter`` Observer (e.g. a
:class:`~reactive_services.adapters.DeadLetterSink`: to ``<topic>.DLT``, the failing fields in
its reason, ``invalid inventory.updated: items[0].remaining: ...``), or, without one, ends the
stream with that :class:`~reactive_services.errors.ValidationError`. The log analytics'
``log.stats`` and ``log.alert`` are forwarded as they are.

Per-order index and the request ``notifications.get_order``
------------------------------------------------------------
The service remembers, for each order id of a forwarded event (the ``order_id`` of
``order.created``, ``order.rejected``, ``inventory.updated``, and of ``stock.low``: the order
that took the product low; log events name no order), which
notifications it handed to the hub: ``{"channel", "topic", "sent_at"}`` with ``sent_at`` the
time it was forwarded (ISO 8601, UTC, milliseconds). The index is in memory (a restart
forgets it) and bounded: at most ``max_orders`` orders (default 10,000; the order least
recently notified is forgotten first) and ``max_per_order`` notifications per order (default
100, the oldest dropped first). A redelivered event (at-least-once) is listed again.

Request ``notifications.get_order`` (``@message_pattern``)::

    request  {"order_id": str}
    reply    [{"channel": "orders", "topic": "order.created", "sent_at": "2025-...Z"}, ...]
             (oldest first; [] for an order the index does not hold)
    errors   ValidationError  the payload is not an OrderQuery {"order_id": non-blank string <= 256
                              characters}; the message names the field
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import reactivex.operators as ops
from reactivex import Observable
from reactivex.abc import ObserverBase

from reactive_services import Controller, event_pattern, message_pattern
from reactive_services.adapters import DeadLetter, Message
from reactive_services.adapters.websocket import Notification
from reactive_services.errors import ConfigError, ValidationError

from .messages import EVENTS, OrderQuery

__all__ = ["CHANNELS", "NotificationController", "notification_of", "to_notification"]

#: topic pattern -> websocket channel
CHANNELS: Mapping[str, str] = {
    "order.created": "orders",
    "order.rejected": "orders",
    "inventory.updated": "inventory",
    "stock.low": "stock",
    "log.stats": "logs",
    "log.alert": "alerts",
}

#: The validator of each shop event the service forwards (each has an ``order_id``).
_MODELS = {pattern: EVENTS[pattern] for pattern in CHANNELS if pattern in EVENTS}


def _pattern(topic: str, namespace: str) -> str:
    return topic[len(namespace) :] if namespace and topic.startswith(namespace) else topic


def to_notification(message: Message, namespace: str = "") -> Notification:
    """The notification for one event record (``namespace`` is stripped from its topic); its
    value is not validated.

    Raises:
        KeyError: the topic has no channel in :data:`CHANNELS`.
    """
    pattern = _pattern(message.topic, namespace)
    return Notification(CHANNELS[pattern], {"topic": pattern, "data": message.value})


def notification_of(message: Message, namespace: str = "") -> Notification | None:
    """The notification the service forwards for one event record, with the record's position;
    None when the record is one of the shop's events and does not validate (the service
    dead-letters it). Pure: the gateway's
    :class:`~reactive_services.adapters.websocket.NotificationLog` maps the records it reads
    again for a client resuming from a cursor with it.

    Raises:
        KeyError: the topic has no channel in :data:`CHANNELS`.
    """
    pattern = _pattern(message.topic, namespace)
    channel = CHANNELS[pattern]
    model = _MODELS.get(pattern)
    if model is not None:
        try:
            model(message.value)
        except ValidationError:
            return None
    return Notification(channel, {"topic": pattern, "data": message.value}, _position(message))


def _position(message: Message) -> tuple[str, int, int]:
    return (message.topic, message.partition, message.offset)


def _forwarded(notification: Notification | None) -> bool:
    return notification is not None


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class NotificationController(Controller):
    """Pipeline: every event record -> validated (the shop's events) -> Notification (with the
    record's position, for the hub's cursors) -> the hub (an Observer); and the request
    ``notifications.get_order`` answered from a bounded per-order index (module docstring).

    Args:
        hub: the Observer that delivers notifications (a ``NotificationHub``, or any
            Observer of Notification in tests).
        dead_letter: where the events that do not validate go, as
            :class:`~reactive_services.adapters.DeadLetter` (e.g. a
            :class:`~reactive_services.adapters.DeadLetterSink`: to ``<topic>.DLT`` with the
            reason in its headers; the record is committed once that is acknowledged). None:
            such an event ends the stream with :class:`~reactive_services.errors.ValidationError`.
        namespace: the namespace of the service (stripped from topic names).
        max_orders: orders the index holds at most (>= 1); the least recently notified
            order is forgotten first.
        max_per_order: notifications kept per order (>= 1); the oldest are dropped first.
        clock: ``() -> str``, the ``sent_at`` of a notification forwarded now (default: UTC
            ISO 8601 with milliseconds).

    Attributes:
        forwarded: notifications handed to the hub, per channel.
        refused: events that did not validate (dead-lettered), per topic pattern.

    Raises:
        ConfigError: ``max_orders`` or ``max_per_order`` < 1.
    """

    def __init__(
        self,
        hub: ObserverBase[Notification],
        *,
        dead_letter: ObserverBase[DeadLetter] | None = None,
        namespace: str = "",
        max_orders: int = 10_000,
        max_per_order: int = 100,
        clock: Callable[[], str] = _utc_now,
    ) -> None:
        if max_orders < 1:
            raise ConfigError("max_orders", f"must be >= 1, got {max_orders!r}")
        if max_per_order < 1:
            raise ConfigError("max_per_order", f"must be >= 1, got {max_per_order!r}")
        self.hub = hub
        self.dead_letter = dead_letter
        self.namespace = namespace
        self.max_orders = max_orders
        self.max_per_order = max_per_order
        self._clock = clock
        self.forwarded: dict[str, int] = {}
        self.refused: dict[str, int] = {}
        self._by_order: OrderedDict[str, deque[dict[str, str]]] = OrderedDict()

    @event_pattern(*CHANNELS, pipeline=True)
    def events(self, messages: Observable[Message]) -> Observable[Any]:
        return messages.pipe(
            ops.map(self._forward),
            ops.filter(_forwarded),
            ops.do(self.hub),
        )

    def _forward(self, message: Message) -> Notification | None:
        """The notification of ``message``, counted and indexed; None when its event does not
        validate (then dead-lettered).

        Raises:
            KeyError: the topic has no channel.
            ValidationError: the event does not validate and there is no ``dead_letter``.
        """
        pattern = _pattern(message.topic, self.namespace)
        channel = CHANNELS[pattern]
        model = _MODELS.get(pattern)
        order_id: str | None = None
        if model is not None:
            try:
                order_id = model(message.value).order_id
            except ValidationError as exc:
                self._refuse(pattern, message, exc)
                return None
        notification = Notification(channel, {"topic": pattern, "data": message.value}, _position(message))
        self.forwarded[channel] = self.forwarded.get(channel, 0) + 1
        if order_id is not None:
            self._index(order_id, channel, pattern)
        return notification

    def _refuse(self, pattern: str, message: Message, error: ValidationError) -> None:
        if self.dead_letter is None:
            raise error
        self.dead_letter.on_next(DeadLetter(message, error))
        self.refused[pattern] = self.refused.get(pattern, 0) + 1

    def _index(self, order_id: str, channel: str, pattern: str) -> None:
        sent = self._by_order.get(order_id)
        if sent is None:
            sent = self._by_order[order_id] = deque(maxlen=self.max_per_order)
            while len(self._by_order) > self.max_orders:
                self._by_order.popitem(last=False)
        else:
            self._by_order.move_to_end(order_id)
        sent.append({"channel": channel, "topic": pattern, "sent_at": self._clock()})

    @property
    def indexed_orders(self) -> int:
        """How many orders the index holds now."""
        return len(self._by_order)

    @message_pattern("notifications.get_order")
    def get_order(self, query: OrderQuery) -> list[dict[str, str]]:
        """The request ``notifications.get_order`` ``{"order_id"}``: the notifications
        forwarded for that order, oldest first (``[]`` if the index does not hold it). A
        malformed payload is refused by the runtime (an error reply naming the field)."""
        return [dict(entry) for entry in self._by_order.get(query.order_id, ())]
