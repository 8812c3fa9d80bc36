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

Each notification's event is ``{"topic": <pattern>, "data": <the event payload>}``.

Per-order index and the request ``notifications.get_order``
------------------------------------------------------------
The service remembers, for each order id found in a forwarded event's payload (``order_id``
of ``order.created``, ``order.rejected`` and ``inventory.updated``; ``stock.low`` names a
product, not an order, and log events no order, so those are not indexed), which
notifications it handed to the hub: ``{"channel", "topic", "sent_at"}`` with ``sent_at`` the
time it was forwarded (ISO 8601, UTC, milliseconds). The index is in memory (a restart
forgets it) and bounded: at most ``max_orders`` orders (default 10,000; the order least
recently notified is forgotten first) and ``max_per_order`` notifications per order (default
100, the oldest dropped first). A redelivered event (at-least-once) is listed again.

Request ``notifications.get_order`` (``@message_pattern``)::

    request  {"order_id": str}
    reply    [{"channel": "orders", "topic": "order.created", "sent_at": "2025-...Z"}, ...]
             (oldest first; [] for an order the index does not hold)
    errors   ValidationError  the payload is not {"order_id": non-empty string <= 256 characters}
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
from reactive_services.adapters import Message
from reactive_services.adapters.websocket import Notification
from reactive_services.errors import ConfigError

from .messages import OrderQuery

__all__ = ["CHANNELS", "NotificationController", "to_notification"]

#: topic pattern -> websocket channel
CHANNELS: Mapping[str, str] = {
    "order.created": "orders",
    "order.rejected": "orders",
    "inventory.updated": "inventory",
    "stock.low": "stock",
    "log.stats": "logs",
    "log.alert": "alerts",
}


def to_notification(message: Message, namespace: str = "") -> Notification:
    """The notification for one event record (``namespace`` is stripped from its topic).

    Raises:
        KeyError: the topic has no channel in :data:`CHANNELS`.
    """
    pattern = message.topic[len(namespace) :] if namespace and message.topic.startswith(namespace) else message.topic
    return Notification(CHANNELS[pattern], {"topic": pattern, "data": message.value})


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class NotificationController(Controller):
    """Pipeline: every event record -> Notification -> the hub (an Observer); and the request
    ``notifications.get_order`` answered from a bounded per-order index (module docstring).

    Args:
        hub: the Observer that delivers notifications (a ``NotificationHub``, or any
            Observer of Notification in tests).
        namespace: the namespace of the service (stripped from topic names).
        max_orders: orders the index holds at most (>= 1); the least recently notified
            order is forgotten first.
        max_per_order: notifications kept per order (>= 1); the oldest are dropped first.
        clock: ``() -> str``, the ``sent_at`` of a notification forwarded now (default: UTC
            ISO 8601 with milliseconds).

    Attributes:
        forwarded: notifications handed to the hub, per channel.

    Raises:
        ConfigError: ``max_orders`` or ``max_per_order`` < 1.
    """

    def __init__(
        self,
        hub: ObserverBase[Notification],
        *,
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
        self.namespace = namespace
        self.max_orders = max_orders
        self.max_per_order = max_per_order
        self._clock = clock
        self.forwarded: dict[str, int] = {}
        self._by_order: OrderedDict[str, deque[dict[str, str]]] = OrderedDict()

    @event_pattern(*CHANNELS, pipeline=True)
    def events(self, messages: Observable[Message]) -> Observable[Any]:
        return messages.pipe(
            ops.map(self._notification),
            ops.do_action(self._count),
            ops.do(self.hub),
        )

    def _notification(self, message: Message) -> Notification:
        return to_notification(message, self.namespace)

    def _count(self, n: Notification) -> None:
        self.forwarded[n.channel] = self.forwarded.get(n.channel, 0) + 1
        self._index(n)

    def _index(self, n: Notification) -> None:
        event = n.event
        data = event.get("data") if isinstance(event, Mapping) else None
        order_id = data.get("order_id") if isinstance(data, Mapping) else None
        if not isinstance(order_id, str) or not order_id:
            return
        sent = self._by_order.get(order_id)
        if sent is None:
            sent = self._by_order[order_id] = deque(maxlen=self.max_per_order)
            while len(self._by_order) > self.max_orders:
                self._by_order.popitem(last=False)
        else:
            self._by_order.move_to_end(order_id)
        sent.append({"channel": n.channel, "topic": str(event.get("topic")), "sent_at": self._clock()})

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
