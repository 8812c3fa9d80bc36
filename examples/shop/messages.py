"""The shop's messages, declared once: the payloads of its topics and requests as pydantic models.

The services validate what they read with these (``@event_pattern`` / ``@message_pattern``
annotations, :class:`~reactive_services.PayloadModel`), and the gateway's HTTP bodies reuse their
fields, so a constraint (an id's length, a quantity's range) is written in one place. A record
that does not validate is dead-lettered with the failing fields in its reason
(``invalid order.created: items[0].quantity: Input should be greater than or equal to 1 (got 0)``).

Topics and requests (see the shop's docs for who publishes and who reads each):

- ``order.created``: :class:`OrderCreated`, published by the orders service (from the Olist
  CSV: prices, sellers, totals) and by the gateway (``POST /orders``: customer, time).
- requests ``orders.get``, ``inventory.get_order``, ``notifications.get_order``:
  :class:`OrderQuery`; ``inventory.get_stock``: :class:`StockQuery`; ``logs.recent_stats``,
  ``logs.recent_alerts``: :class:`RecentQuery` (or nothing).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from reactive_services import PayloadModel

__all__ = [
    "MAX_ID_CHARS",
    "MAX_ITEMS",
    "MAX_ORDER_BYTES",
    "MAX_QUANTITY",
    "ORDER_CREATED",
    "Id",
    "ORDER_QUERY",
    "OrderCreated",
    "OrderLine",
    "OrderQuery",
    "Quantity",
    "RecentQuery",
    "StockQuery",
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


class OrderLine(BaseModel):
    """One item of an order: ``quantity`` units of ``product_id`` (other keys are kept out)."""

    model_config = ConfigDict(frozen=True)

    product_id: Id
    quantity: Quantity
    unit_price: float | None = Field(default=None, ge=0, description="BRL, the orders service's")
    seller_id: str | None = Field(default=None, description="the orders service's")


class OrderCreated(BaseModel):
    """The ``order.created`` value: an order id and one or more items.

    The orders service adds ``total`` and ``freight`` (BRL), the gateway ``customer_id`` and
    ``created_at`` (ISO 8601, UTC); other keys are ignored. The same product may appear in more
    than one item (the inventory adds their quantities).
    """

    model_config = ConfigDict(frozen=True)

    order_id: Id
    items: list[OrderLine] = Field(min_length=1)
    customer_id: str | None = None
    created_at: str | None = None
    total: float | None = None
    freight: float | None = None


#: The validator of ``order.created`` values (its errors say ``invalid order.created: ...``).
ORDER_CREATED = PayloadModel(OrderCreated, "order.created")


class OrderQuery(BaseModel):
    """A request about one order: ``{"order_id": str}`` (other keys are ignored)."""

    order_id: Id


class StockQuery(BaseModel):
    """``inventory.get_stock``: the products to tell the stock of (an empty list is allowed)."""

    product_ids: list[Id]


class RecentQuery(BaseModel):
    """``logs.recent_stats`` / ``logs.recent_alerts``: the latest ``limit`` values, of one
    ``source`` or of all."""

    limit: Annotated[int, Field(ge=1, le=1000, strict=True)] = 200
    source: Id | None = None


#: The validator of order queries (its errors say ``invalid OrderQuery: ...``).
ORDER_QUERY = PayloadModel(OrderQuery)
