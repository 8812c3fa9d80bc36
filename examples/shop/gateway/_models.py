"""The gateway's request and response bodies (pydantic models, in the OpenAPI document)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from ..messages import MAX_ITEMS, MAX_QUANTITY, Id, Quantity


class OrderItemIn(BaseModel):
    """One line of ``POST /orders``."""

    model_config = ConfigDict(extra="forbid")

    product_id: Id
    quantity: Annotated[Quantity, Field(le=MAX_QUANTITY)]


class OrderRequest(BaseModel):
    """The body of ``POST /orders`` (unknown keys are refused)."""

    model_config = ConfigDict(extra="forbid")

    items: list[OrderItemIn] = Field(min_length=1, max_length=MAX_ITEMS, description="1 to 100 items")
    customer_id: Id | None = None


class LoginRequest(BaseModel):
    """The body of ``POST /auth/login``."""

    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=64)
    password: SecretStr = Field(min_length=1, max_length=1024)


class OrderAccepted(BaseModel):
    """The answer of ``POST /orders`` (202)."""

    order_id: str
    status: str = "accepted"


class StockLevel(BaseModel):
    """The answer of ``GET /inventory/{id}``."""

    product_id: str
    stock: int


class StockItem(BaseModel):
    """One product of ``GET /inventory``."""

    product_id: str
    stock: int
    low: bool = Field(description="stock < threshold (the level at which stock.low is published)")


class StockPage(BaseModel):
    """The answer of ``GET /inventory``: one page of the stock."""

    items: list[StockItem]
    total: int = Field(description="products that match (all, or the low ones with low_only)")
    low: int = Field(description="products below the threshold")
    threshold: int
    limit: int
    offset: int
    order: str


class LatestOrder(BaseModel):
    """One order of ``GET /orders``: the order as created, when the order query service stored it,
    and the inventory's outcome."""

    model_config = ConfigDict(extra="allow")  # the order.created value's other keys (total, freight, ...)

    order_id: str
    items: list[dict[str, Any]]
    created_at: str | None = None
    received_at: float = Field(description="seconds since the epoch")
    outcome: dict[str, Any] | None = Field(
        description='{"status": "applied" | "rejected", "items", "reason"}; null if not processed yet or missing'
    )


class LatestOrders(BaseModel):
    """The answer of ``GET /orders``: the latest orders, newest first."""

    orders: list[LatestOrder]
    total: int = Field(description="orders the order query service holds")
    missing: list[str] = Field(description='["inventory"] when the outcomes could not be asked (outcome: null)')
    errors: dict[str, str] = Field(description="part -> what went wrong")


class Token(BaseModel):
    """The answer of ``POST /auth/login`` (RFC 6749 §5.1)."""

    access_token: str
    token_type: str
    expires_in: int
    scope: str


class OrderView(BaseModel):
    """The answer of ``GET /orders/{id}``: the three parts, and those that did not answer."""

    order_id: str
    order: dict[str, Any] | None = Field(description="the order as created (orders.get); null if unknown or missing")
    inventory: dict[str, Any] | None = Field(
        description='{"status": "applied" | "rejected", "items", "reason"}; null if not processed yet or missing'
    )
    notifications: list[dict[str, Any]] | None = Field(description='[{"channel", "topic", "sent_at"}]; null if missing')
    missing: list[str] = Field(description="parts that timed out or failed")
    errors: dict[str, str] = Field(description="part -> what went wrong")


class Readiness(BaseModel):
    """The answer of ``GET /readyz`` (200 or 503)."""

    status: str
    checks: dict[str, Any]
    error: str | None = None
