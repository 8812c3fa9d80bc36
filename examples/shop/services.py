"""The shop's consuming services as controllers for :class:`reactive_services.Microservice`.

``InventoryController``: ``order.created`` -> decode and validate (bad records to
``order.created.DLT``) -> the :class:`~reactive_services.examples.shop.inventory.InventoryService` Observer;
the request ``inventory.get_stock`` ``{"product_ids": [str, ...]}`` answered with
``{product_id: units or null}``; and the request ``inventory.get_order`` ``{"order_id": str}``
answered with the order's outcome ``{"status", "items", "reason"}`` or null; for a dashboard's
first view, ``inventory.list_stock`` (one page of the stock, low products flagged) and
``inventory.get_outcomes`` (the outcomes of many orders at once).
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
from reactive_services.logs import LogAnalyticsService, LogsController, LogSource
from reactive_services.operators import decode_json

from .inventory import MAX_ORDER_BYTES, InventoryService, parse_order
from .log_sources import SOURCES
from .messages import (
    InventoryUpdated,
    OrderQuery,
    OrderRejected,
    OutcomesQuery,
    RecentQuery,
    StockListQuery,
    StockLow,
    StockQuery,
)

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

    @event_pattern(
        "order.created",
        pipeline=True,
        emits={"inventory.updated": InventoryUpdated, "order.rejected": OrderRejected, "stock.low": StockLow},
    )
    def orders(self, messages: Observable[Message]) -> Observable[Any]:
        """Reserve stock for each order; publish its outcome and the products that ran low."""
        return messages.pipe(
            ops.do_action(self._count),
            decode_json(self.dead_letter, parse=parse_order, max_bytes=MAX_ORDER_BYTES),
            ops.map(_value_of),
            ops.do(self.inventory),
        )

    def _count(self, _: Message) -> None:
        self.received += 1

    @message_pattern("inventory.get_stock")
    async def get_stock(self, query: StockQuery) -> dict[str, int | None]:
        """The request ``inventory.get_stock`` ``{"product_ids": [str, ...]}`` (an empty list is
        allowed; a malformed payload is refused by the runtime, naming the field).

        Returns:
            ``{product_id: units}`` for each id asked, ``None`` for an unknown product.
        """
        return await self.inventory.store.stock_of(query.product_ids)

    @message_pattern("inventory.get_order")
    async def get_order(self, query: OrderQuery) -> dict[str, Any] | None:
        """The request ``inventory.get_order``: what the inventory decided for one order.

        Args:
            payload: ``{"order_id": str}`` (non-empty, at most 256 characters).

        Returns:
            ``{"status": "applied" | "rejected", "items": [...], "reason": str | None}`` (the
            stored :class:`~reactive_services.examples.shop.inventory.Outcome`: applied items carry
            ``product_id``, ``quantity``, ``remaining``; rejected ones ``product_id``,
            ``quantity``, and ``reason`` says why), or ``null`` when the order has not been
            processed (not received yet, or dead-lettered).

        A malformed payload is refused by the runtime (an error reply naming the field).
        """
        outcome = await self.inventory.store.outcome(query.order_id)
        if outcome is None:
            return None
        return {"status": outcome.status, "items": list(outcome.items), "reason": outcome.reason}

    @message_pattern("inventory.list_stock")
    async def list_stock(self, query: StockListQuery | None) -> dict[str, Any]:
        """The request ``inventory.list_stock`` ``{"limit": 1..1000 (default 100), "offset": >= 0,
        "order": "recent" | "product" | "stock", "low_only": bool}`` (or no payload): one page of
        the stock (:meth:`InventoryStore.stock_page
        <reactive_services.examples.shop.inventory.InventoryStore.stock_page>` tells the orders).

        Returns:
            ``{"items": [{"product_id", "stock", "low"}], "total", "low", "threshold", "limit",
            "offset", "order"}``: ``low`` on an item: ``stock < threshold`` (the service's
            ``low_stock_threshold``, the one ``stock.low`` uses); ``total``: the products that
            match (every product, or the low ones with ``low_only``); ``low``: the low products.

        A malformed payload is refused by the runtime (an error reply naming the field).
        """
        query = query or StockListQuery()
        threshold = self.inventory.low_stock_threshold
        rows, total, low = await self.inventory.store.stock_page(
            threshold=threshold, limit=query.limit, offset=query.offset, order=query.order, low_only=query.low_only
        )
        return {
            "items": [{"product_id": p, "stock": units, "low": units < threshold} for p, units in rows],
            "total": total,
            "low": low,
            "threshold": threshold,
            "limit": query.limit,
            "offset": query.offset,
            "order": query.order,
        }

    @message_pattern("inventory.get_outcomes")
    async def get_outcomes(self, query: OutcomesQuery) -> dict[str, dict[str, Any] | None]:
        """The request ``inventory.get_outcomes`` ``{"order_ids": [str, ...]}`` (at most 1000):
        ``{order_id: {"status", "items", "reason"} | null}`` (as ``inventory.get_order`` answers
        for each; null: not processed yet). A malformed payload is refused by the runtime."""
        outcomes = await self.inventory.store.outcomes(query.order_ids)
        return {
            order_id: None
            if outcome is None
            else {"status": outcome.status, "items": list(outcome.items), "reason": outcome.reason}
            for order_id, outcome in outcomes.items()
        }


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
    def recent_stats(self, query: RecentQuery | None) -> list[dict[str, Any]]:
        """The request ``logs.recent_stats`` ``{"limit": 1..1000 (default 200), "source"?}`` (or
        no payload): up to ``limit`` window stats (``log.stats`` values), oldest first, of
        ``source`` only when given (its name in any case). A malformed payload is refused by the
        runtime."""
        return self._latest(self.analytics.recent, query or RecentQuery())

    @message_pattern("logs.recent_alerts")
    def recent_alerts(self, query: RecentQuery | None) -> list[dict[str, Any]]:
        """The request ``logs.recent_alerts``: the latest ``log.alert`` values; the payload as
        for ``logs.recent_stats``."""
        return self._latest(self.analytics.recent_alerts, query or RecentQuery())

    @staticmethod
    def _latest(values: Iterable[dict[str, Any]], query: RecentQuery) -> list[dict[str, Any]]:
        if query.source is None:
            return list(values)[-query.limit :]
        wanted = query.source.casefold()  # source names in any case, as `logs analyze --format` takes them
        return [v for v in values if str(v["source"]).casefold() == wanted][-query.limit :]
