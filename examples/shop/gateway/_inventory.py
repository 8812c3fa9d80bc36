"""Routes ``GET /inventory/{id}`` and ``GET /inventory`` (one page of the stock)."""

# No ``from __future__ import annotations``: see _orders.py.

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi import Path as PathParam

from reactive_services.auth import Claims
from reactive_services.errors import BrokerError, RemoteError
from reactive_services.gateway import BearerAuth, Requester, problems, send_within, upstream_error

from ..messages import MAX_PAGE
from ..order_query import MAX_ORDER_ID_CHARS
from ._models import StockLevel, StockPage
from ._settings import GatewaySettings


def router(requests: Requester, settings: GatewaySettings, auth: BearerAuth) -> APIRouter:
    """The inventory routes, asking through ``requests`` (the broker or gRPC: ``GatewayRequests``)."""
    routes = APIRouter(tags=["inventory"])

    @routes.get(
        "/inventory",
        response_model=StockPage,
        responses=problems(401, 403, 422, 502, 503, 504),
        summary="One page of the stock, low products flagged (scope inventory:read)",
    )
    async def list_stock(
        claims: Annotated[Claims, Depends(auth.require("inventory:read"))],
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="products in the page")] = 100,
        offset: Annotated[int, Query(ge=0, le=10_000_000, description="products skipped")] = 0,
        order: Annotated[
            Literal["recent", "product", "stock"],
            Query(
                description="recent: the products of the latest applied orders first; product: by id;"
                " stock: fewest first"
            ),
        ] = "recent",
        low_only: Annotated[bool, Query(description="only the products below the threshold")] = False,
    ) -> dict[str, Any]:
        """Asks ``inventory.list_stock``: ``{"items": [{"product_id", "stock", "low"}], "total",
        "low", "threshold", "limit", "offset", "order"}`` (``low``: ``stock < threshold``, the
        level at which ``stock.low`` is published)."""
        timeout = settings.call_timeout_s
        payload = {"limit": limit, "offset": offset, "order": order, "low_only": low_only}
        try:
            reply = await send_within(requests, "inventory.list_stock", payload, timeout_s=timeout)
        except (TimeoutError, BrokerError, RemoteError) as exc:
            raise upstream_error("inventory.list_stock", exc, timeout) from None
        if not isinstance(reply, Mapping) or not isinstance(reply.get("items"), list):
            raise HTTPException(502, "inventory.list_stock: unexpected reply")
        return dict(reply)

    @routes.get(
        "/inventory/{product_id}",
        response_model=StockLevel,
        responses=problems(401, 403, 404, 502, 503, 504),
        summary="The stock of one product (scope inventory:read)",
    )
    async def get_stock(
        product_id: Annotated[str, PathParam(min_length=1, max_length=MAX_ORDER_ID_CHARS)],
        claims: Annotated[Claims, Depends(auth.require("inventory:read"))],
    ) -> dict[str, Any]:
        """Asks ``inventory.get_stock`` for one product."""
        timeout = settings.call_timeout_s
        try:
            reply = await send_within(requests, "inventory.get_stock", {"product_ids": [product_id]}, timeout_s=timeout)
        except (TimeoutError, BrokerError, RemoteError) as exc:
            raise upstream_error("inventory.get_stock", exc, timeout) from None
        if not isinstance(reply, Mapping):
            raise HTTPException(502, "inventory.get_stock: unexpected reply")
        stock = reply.get(product_id)
        if stock is None:
            raise HTTPException(404, f"unknown product {product_id!r}")
        return {"product_id": product_id, "stock": stock}

    return routes
