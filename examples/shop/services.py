"""The shop's consuming services as controllers for :class:`reactive_services.Microservice`.

``InventoryController``: ``order.created`` -> decode and validate (bad records to
``order.created.DLT``) -> the :class:`~examples.shop.inventory.InventoryService` Observer.
``LogAnalyticsController``: ``logs`` -> parse, windows, templates -> the
:class:`~examples.shop.log_analytics.LogAnalyticsService` Observer.
``NotificationController`` lives in :mod:`examples.shop.notifications`.
"""

from __future__ import annotations

from typing import Any

import reactivex.operators as ops
from reactivex import Observable

from adapters import DeadLetterSink, Message
from operators import decode_json
from reactive_services import Controller, event_pattern

from .inventory import InventoryService, parse_order
from .log_analytics import LogAnalyticsService

__all__ = ["InventoryController", "LogAnalyticsController"]


class InventoryController(Controller):
    """``order.created`` records into the inventory.

    Args:
        inventory: the Observer that reserves stock.
        dead_letter: where records that are not valid orders go (a :class:`DeadLetterSink`).

    Attributes:
        received: records read from the topic (valid or not).
    """

    def __init__(self, inventory: InventoryService, dead_letter: DeadLetterSink) -> None:
        self.inventory = inventory
        self.dead_letter = dead_letter
        self.received = 0

    @event_pattern("order.created", pipeline=True)
    def orders(self, messages: Observable[Message]) -> Observable[Any]:
        return messages.pipe(
            ops.do_action(self._count),
            decode_json(self.dead_letter, parse=parse_order),
            ops.map(lambda m: m.value),
            ops.do(self.inventory),
        )

    def _count(self, _: Message) -> None:
        self.received += 1


class LogAnalyticsController(Controller):
    """``logs`` records into the log analytics pipeline.

    Args:
        analytics: the Observer that publishes window stats and alerts.

    Attributes:
        received: log records read from the topic.
    """

    def __init__(self, analytics: LogAnalyticsService) -> None:
        self.analytics = analytics
        self.received = 0

    @event_pattern("logs", pipeline=True)
    def logs(self, messages: Observable[Message]) -> Observable[Any]:
        return self.analytics.attach(messages.pipe(ops.do_action(self._count)))

    def _count(self, _: Message) -> None:
        self.received += 1
