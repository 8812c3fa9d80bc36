"""Notification service: shop and log events pushed to websocket clients by channel.

It consumes the events of the other services and turns each into a
:class:`~adapters.websocket.Notification` on a channel; the
:class:`~adapters.websocket.NotificationHub` Observer at the end of the pipeline fans it out
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
"""

from __future__ import annotations

from typing import Any, Mapping

import reactivex.operators as ops
from reactivex import Observable
from reactivex.abc import ObserverBase

from adapters import Message
from adapters.websocket import Notification
from reactive_services import Controller, event_pattern

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
    pattern = message.topic[len(namespace):] if namespace and message.topic.startswith(namespace) else message.topic
    return Notification(CHANNELS[pattern], {"topic": pattern, "data": message.value})


class NotificationController(Controller):
    """Pipeline: every event record -> Notification -> the hub (an Observer).

    Args:
        hub: the Observer that delivers notifications (a ``NotificationHub``, or any
            Observer of Notification in tests).
        namespace: the namespace of the service (stripped from topic names).

    Attributes:
        forwarded: notifications handed to the hub, per channel.
    """

    def __init__(self, hub: ObserverBase[Notification], *, namespace: str = "") -> None:
        self.hub = hub
        self.namespace = namespace
        self.forwarded: dict[str, int] = {}

    @event_pattern(*CHANNELS, pipeline=True)
    def events(self, messages: Observable[Message]) -> Observable[Any]:
        return messages.pipe(
            ops.map(lambda m: to_notification(m, self.namespace)),
            ops.do_action(self._count),
            ops.do(self.hub),
        )

    def _count(self, n: Notification) -> None:
        self.forwarded[n.channel] = self.forwarded.get(n.channel, 0) + 1
