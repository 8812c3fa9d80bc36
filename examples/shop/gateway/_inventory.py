"""Route ``GET /inventory/{id}``."""

# No ``from __future__ import annotations``: see _orders.py.

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi import Path as PathParam

from reactive_services.auth import Claims
from reactive_services.errors import BrokerError, RemoteError
from reactive_services.gateway import BearerAuth, Requester, problems, send_within, upstream_error

from ..order_query import MAX_ORDER_ID_CHARS
from ._models import StockLevel
from ._settings import GatewaySettings


def router(requests: Requester, settings: GatewaySettings, auth: BearerAuth) -> APIRouter:
    """The inventory route, asking through ``requests`` (the broker or gRPC: ``GatewayRequests``)."""
    routes = APIRouter(tags=["inventory"])

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
