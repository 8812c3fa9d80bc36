"""The shop's messages, declared once: the payloads of its topics and requests as pydantic models.

The services build what they publish from these models and validate what they read with them
(``@event_pattern`` / ``@message_pattern`` annotations, :class:`~reactive_services.PayloadModel`),
and the gateway's HTTP bodies reuse their fields, so a constraint (an id's length, a quantity's
range) is written in one place. A record that does not validate is dead-lettered with the
failing fields in its reason
(``invalid order.created: items[0].quantity: Input should be greater than or equal to 1 (got 0)``).

Topics (JSON values; the record key in brackets), who publishes and who reads them:

- ``order.created`` [order_id]: :class:`OrderCreated`. Published by the orders service (from
  the Olist CSV: prices, sellers, totals) and by the gateway (``POST /orders``: customer,
  time); read by the inventory, the order query service and the notifications.
- ``inventory.updated`` [order_id]: :class:`InventoryUpdated` (an order applied),
  ``order.rejected`` [order_id]: :class:`OrderRejected` (an order rejected) and ``stock.low``
  [product_id]: :class:`StockLow` (a sale left a product low). Published by the inventory;
  read by the notifications.
- ``logs`` [source]: :class:`~reactive_services.logs.LogRecord` (the library's, listed here
  with the shop's). Published by the log replay (``replay_logs``); read by the log analytics.

- ``log.stats`` [source]: :class:`~reactive_services.logs.WindowStats`, ``log.alert`` [source]:
  :class:`~reactive_services.logs.LogAlert` and ``logs.late`` [source]:
  :class:`~reactive_services.logs.LateLine` (the library's ``TypedDict`` s, listed here with the
  shop's). Published by the log analytics; ``log.stats`` and ``log.alert`` read by the
  notifications.

:data:`EVENTS` maps each of those topics but the log analytics' outputs to its validator.

Requests: ``orders.get``, ``inventory.get_order``, ``notifications.get_order``:
:class:`OrderQuery`; ``inventory.get_stock``: :class:`StockQuery`; ``inventory.list_stock``:
:class:`StockListQuery` (or nothing); ``inventory.get_outcomes``: :class:`OutcomesQuery`;
``orders.latest``: :class:`LatestOrdersQuery` (or nothing); ``logs.recent_stats``,
``logs.recent_alerts``: :class:`RecentQuery` (or nothing).

Every model ignores the keys it does not declare (a newer producer may add some); the event
models are frozen. Ids are :data:`Id`, units :data:`Quantity` (>= 1) or :data:`Units` (>= 0),
amounts BRL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from reactive_services import PayloadModel
from reactive_services.logs import LOG_RECORD, LateLine, LogAlert, LogRecord, WindowStats

__all__ = [
    "EVENTS",
    "INVENTORY_UPDATED",
    "LOG_RECORD",
    "MAX_ID_CHARS",
    "MAX_ITEMS",
    "MAX_ORDER_BYTES",
    "MAX_PAGE",
    "MAX_QUANTITY",
    "ORDER_CREATED",
    "ORDER_QUERY",
    "ORDER_REJECTED",
    "STOCK_LOW",
    "Id",
    "InventoryUpdated",
    "ItemRequested",
    "ItemReserved",
    "LateLine",
    "LatestOrdersQuery",
    "LogAlert",
    "LogRecord",
    "OrderCreated",
    "OrderLine",
    "OrderQuery",
    "OrderRejected",
    "OutcomesQuery",
    "Quantity",
    "RecentQuery",
    "StockListQuery",
    "StockLow",
    "StockQuery",
    "Units",
    "WindowStats",
]

#: Characters of an order, product or customer id, at most.
MAX_ID_CHARS = 256

#: Items per order placed through the gateway, and units per item, at most.
MAX_ITEMS = 100
MAX_QUANTITY = 1_000_000

#: The largest ``order.created`` record (bytes of its value) the shop's consumers accept; a
#: larger one is dead-lettered (the inventory and the order query service).
MAX_ORDER_BYTES = 64 * 1024

#: An id: 1 to :data:`MAX_ID_CHARS` characters, not all blank.
Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS, pattern=r"\S", description="non-blank")]

#: Units of a product: an integer >= 1 (not a string, a float or a boolean).
Quantity = Annotated[
    int, Field(ge=1, strict=True, description="units, an integer >= 1 (not a string, float or boolean)")
]

#: Units in stock: an integer >= 0 (not a string, a float or a boolean).
Units = Annotated[int, Field(ge=0, strict=True, description="units, an integer >= 0")]


class _OmitNone(BaseModel):
    """A model whose fields that are None are left out of its serialised form."""

    @model_serializer(mode="wrap")
    def _omit_none(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if value is not None}


class OrderLine(_OmitNone):
    """One item of an order: ``quantity`` units of ``product_id`` (other keys are kept out).

    ``unit_price`` (BRL, >= 0) and ``seller_id`` come from the orders service; the gateway's
    items have neither. Serialised without the fields that are None (as :class:`OrderCreated`).
    """

    model_config = ConfigDict(frozen=True)

    product_id: Id
    quantity: Quantity
    unit_price: float | None = Field(default=None, ge=0, description="BRL, the orders service's")
    seller_id: str | None = Field(default=None, description="the orders service's")


class OrderCreated(_OmitNone):
    """The ``order.created`` value: an order id and one or more items.

    ``{"order_id": Id, "items": [OrderLine, ...] (>= 1), "created_at"?: str, "customer_id"?: str,
    "total"?: float, "freight"?: float}``. The orders service adds ``total`` and ``freight``
    (BRL: the items' prices and freight, rounded to cents) and each item's ``unit_price`` and
    ``seller_id``; the gateway adds ``created_at`` (ISO 8601, UTC, milliseconds, e.g.
    ``"2025-01-02T10:00:00.000Z"``) and ``customer_id`` when the caller gave one. Other keys are
    ignored. The same product may appear in more than one item (the inventory adds their
    quantities).

    The optional fields that are None are left out of the serialised form (``model_dump``, and
    so the record's JSON: the emitters write a model with ``model_dump(mode="json")``): each
    producer's JSON holds its own fields only, never ``null``, as it did when the producers
    wrote dicts. The fields are declared in the order the producers write them.
    """

    model_config = ConfigDict(frozen=True)

    order_id: Id
    items: list[OrderLine] = Field(min_length=1)
    created_at: str | None = Field(default=None, description="ISO 8601, UTC; the gateway's")
    customer_id: str | None = Field(default=None, description="the gateway's")
    total: float | None = Field(default=None, description="BRL, the orders service's")
    freight: float | None = Field(default=None, description="BRL, the orders service's")


#: The validator of ``order.created`` values (its errors say ``invalid order.created: ...``).
ORDER_CREATED = PayloadModel(OrderCreated, "order.created")


class ItemReserved(BaseModel):
    """An item of an applied order: ``quantity`` units of ``product_id`` reserved, ``remaining``
    units left in stock after the order."""

    model_config = ConfigDict(frozen=True)

    product_id: Id
    quantity: Quantity
    remaining: Units


class InventoryUpdated(BaseModel):
    """The ``inventory.updated`` value (key: the order id): the inventory applied an order,
    every item reserved: ``{"order_id": Id, "items": [{"product_id", "quantity", "remaining"},
    ...] (>= 1, one per product)}``."""

    model_config = ConfigDict(frozen=True)

    order_id: Id
    items: list[ItemReserved] = Field(min_length=1)


#: The validator of ``inventory.updated`` values.
INVENTORY_UPDATED = PayloadModel(InventoryUpdated, "inventory.updated")


class ItemRequested(BaseModel):
    """An item of a rejected order: the ``quantity`` units of ``product_id`` it asked for."""

    model_config = ConfigDict(frozen=True)

    product_id: Id
    quantity: Quantity


class OrderRejected(BaseModel):
    """The ``order.rejected`` value (key: the order id): the inventory rejected an order, nothing
    reserved: ``{"order_id": Id, "reason": str, "items": [{"product_id", "quantity"}, ...] (>= 1,
    one per product)}``. ``reason`` names each product short of stock or unknown, e.g.
    ``"insufficient stock for product 'p3': requested 2, available 1"`` (several joined with
    ``"; "``)."""

    model_config = ConfigDict(frozen=True)

    order_id: Id
    reason: str = Field(min_length=1)
    items: list[ItemRequested] = Field(min_length=1)


#: The validator of ``order.rejected`` values.
ORDER_REJECTED = PayloadModel(OrderRejected, "order.rejected")


class StockLow(BaseModel):
    """The ``stock.low`` value (key: the product id): an applied order left ``product_id`` with
    ``remaining`` units, fewer than ``threshold`` (the inventory's ``low_stock_threshold``):
    ``{"product_id": Id, "remaining": int >= 0, "threshold": int >= 0, "order_id": Id (the
    order that took it low)}``."""

    model_config = ConfigDict(frozen=True)

    product_id: Id
    remaining: Units
    threshold: Units
    order_id: Id


#: The validator of ``stock.low`` values.
STOCK_LOW = PayloadModel(StockLow, "stock.low")

#: The validator of each event topic's values, by topic (without a namespace).
EVENTS: Mapping[str, PayloadModel] = {
    "order.created": ORDER_CREATED,
    "inventory.updated": INVENTORY_UPDATED,
    "order.rejected": ORDER_REJECTED,
    "stock.low": STOCK_LOW,
    "logs": LOG_RECORD,
}


class OrderQuery(BaseModel):
    """A request about one order: ``{"order_id": str}`` (other keys are ignored)."""

    order_id: Id


class StockQuery(BaseModel):
    """``inventory.get_stock``: the products to tell the stock of (an empty list is allowed)."""

    product_ids: list[Id]


#: The most values one page of ``inventory.list_stock`` / ``orders.latest`` /
#: ``inventory.get_outcomes`` holds.
MAX_PAGE = 1000


class StockListQuery(BaseModel):
    """``inventory.list_stock``: one page of the stock table, ``limit`` products from ``offset``.

    ``order``: ``"recent"`` (the products of the latest applied orders first, then the others by
    product id), ``"product"`` (by product id) or ``"stock"`` (fewest units first, then by
    product id); ``low_only``: only the products below the low-stock threshold."""

    limit: Annotated[int, Field(ge=1, le=MAX_PAGE, strict=True)] = 100
    offset: Annotated[int, Field(ge=0, strict=True)] = 0
    order: Literal["recent", "product", "stock"] = "recent"
    low_only: bool = False


class OutcomesQuery(BaseModel):
    """``inventory.get_outcomes``: the orders to tell the outcome of (at most :data:`MAX_PAGE`)."""

    order_ids: Annotated[list[Id], Field(max_length=MAX_PAGE)]


class LatestOrdersQuery(BaseModel):
    """``orders.latest``: the ``limit`` orders received last."""

    limit: Annotated[int, Field(ge=1, le=MAX_PAGE, strict=True)] = 50


class RecentQuery(BaseModel):
    """``logs.recent_stats`` / ``logs.recent_alerts``: the latest ``limit`` values, of one
    ``source`` or of all."""

    limit: Annotated[int, Field(ge=1, le=1000, strict=True)] = 200
    source: Id | None = None


#: The validator of order queries (its errors say ``invalid OrderQuery: ...``).
ORDER_QUERY = PayloadModel(OrderQuery)
