"""The shop's consuming services as controllers for :class:`reactive_services.Microservice`.

``InventoryController``: ``order.created`` -> decode and validate (bad records to
``order.created.DLT``) -> the :class:`~reactive_services.examples.shop.inventory.InventoryService` Observer;
the request ``inventory.get_stock`` ``{"product_ids": [str, ...]}`` answered with
``{product_id: units or null}``; and the request ``inventory.get_order`` ``{"order_id": str}``
answered with the order's outcome ``{"status", "items", "reason"}`` or null.
``LogAnalyticsController``: ``logs`` -> parse, windows, templates -> the
:class:`~reactive_services.logs.LogAnalyticsService` Observer.
``NotificationController`` lives in :mod:`reactive_services.examples.shop.notifications`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import reactivex.operators as ops
from reactivex import Observable

from reactive_services import Controller, event_pattern, message_pattern
from reactive_services.adapters import DeadLetterSink, Message
from reactive_services.errors import ValidationError
from reactive_services.logs import LogAnalyticsService, LogsController, LogSource
from reactive_services.operators import decode_json

from .inventory import MAX_ORDER_BYTES, InventoryService, parse_order
from .log_sources import SOURCES
from .order_query import order_id_of

__all__ = ["InventoryController", "LogAnalyticsController"]


def _value_of(message: Message) -> Any:
    return message.value


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
            decode_json(self.dead_letter, parse=parse_order, max_bytes=MAX_ORDER_BYTES),
            ops.map(_value_of),
            ops.do(self.inventory),
        )

    def _count(self, _: Message) -> None:
        self.received += 1

    @message_pattern("inventory.get_stock")
    async def get_stock(self, payload: Any) -> dict[str, int | None]:
        """The request ``inventory.get_stock``: the stock of some products.

        Args:
            payload: ``{"product_ids": [str, ...]}`` (non-empty strings; may be empty list).

        Returns:
            ``{product_id: units}`` for each id asked, ``None`` for an unknown product.

        Raises:
            ValidationError: the payload has another shape (the client gets an error reply).
        """
        if not isinstance(payload, Mapping):
            raise ValidationError(f"payload: must be a JSON object, got {type(payload).__name__}")
        ids = payload.get("product_ids")
        if not isinstance(ids, list):
            raise ValidationError(f"product_ids: must be a list of strings, got {ids!r}")
        for i, product_id in enumerate(ids):
            if not isinstance(product_id, str) or not product_id:
                raise ValidationError(f"product_ids[{i}]: must be a non-empty string, got {product_id!r}")
        return await self.inventory.store.stock_of(ids)

    @message_pattern("inventory.get_order")
    async def get_order(self, payload: Any) -> dict[str, Any] | None:
        """The request ``inventory.get_order``: what the inventory decided for one order.

        Args:
            payload: ``{"order_id": str}`` (non-empty, at most 256 characters).

        Returns:
            ``{"status": "applied" | "rejected", "items": [...], "reason": str | None}`` (the
            stored :class:`~reactive_services.examples.shop.inventory.Outcome`: applied items carry
            ``product_id``, ``quantity``, ``remaining``; rejected ones ``product_id``,
            ``quantity``, and ``reason`` says why), or ``null`` when the order has not been
            processed (not received yet, or dead-lettered).

        Raises:
            ValidationError: a malformed payload (the client gets an error reply).
        """
        outcome = await self.inventory.store.outcome(order_id_of(payload))
        if outcome is None:
            return None
        return {"status": outcome.status, "items": list(outcome.items), "reason": outcome.reason}


class LogAnalyticsController(LogsController):
    """``logs`` records into the log analytics pipeline, and the shop's two queries of its results.

    The ``logs`` handler is :class:`reactive_services.logs.LogsController`'s; the shop adds the
    requests ``logs.recent_stats`` and ``logs.recent_alerts`` (the gateway's ``/logs`` routes).

    Args:
        analytics: the Observer that publishes window stats, alerts and late lines.
        dead_letter: where records that are not ``{"line": str, ...}`` objects go (e.g. a
            :class:`DeadLetterSink`: to ``logs.DLT`` with the reason in its headers). None: such
            a record ends the stream with :class:`ValidationError`.
        sources: how to read each source (default: the shop's four loghub sources,
            :data:`~reactive_services.examples.shop.log_sources.SOURCES`).
        **pipeline_options: passed to :func:`reactive_services.logs.build_pipeline` (``top_n``).

    Attributes:
        received: log records that reached the pipeline (a record that is not JSON at all is
            dead-lettered by the broker's source before it and is not counted here).
    """

    def __init__(
        self,
        analytics: LogAnalyticsService,
        dead_letter: DeadLetterSink | None = None,
        *,
        sources: Mapping[str, LogSource] = SOURCES,
        **pipeline_options: Any,
    ) -> None:
        super().__init__(analytics, dead_letter, sources=sources, **pipeline_options)

    @message_pattern("logs.recent_stats")
    def recent_stats(self, payload: Any) -> list[dict[str, Any]]:
        """The request ``logs.recent_stats``: the latest window stats (``log.stats`` values).

        Args:
            payload: ``{"limit": int in 1..1000 (default 200), "source": str (optional)}``.

        Returns:
            Up to ``limit`` stats values, oldest first (of ``source`` only, when given).

        Raises:
            ValidationError: a malformed payload (the client gets an error reply).
        """
        return self._latest(self.analytics.recent, payload)

    @message_pattern("logs.recent_alerts")
    def recent_alerts(self, payload: Any) -> list[dict[str, Any]]:
        """The request ``logs.recent_alerts``: the latest ``log.alert`` values; the payload and
        errors as for ``logs.recent_stats``."""
        return self._latest(self.analytics.recent_alerts, payload)

    @staticmethod
    def _latest(values: Iterable[dict[str, Any]], payload: Any) -> list[dict[str, Any]]:
        if payload is None:
            payload = {}
        if not isinstance(payload, Mapping):
            raise ValidationError(f"payload: must be a JSON object, got {type(payload).__name__}")
        limit = payload.get("limit", 200)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise ValidationError(f"limit: must be an integer in 1..1000, got {limit!r}")
        source = payload.get("source")
        if source is not None and (not isinstance(source, str) or not source):
            raise ValidationError(f"source: must be a non-empty string, got {source!r}")
        chosen = [v for v in values if source is None or v["source"] == source]
        return chosen[-limit:]
