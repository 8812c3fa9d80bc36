"""Routes ``POST /orders``, ``GET /orders/{id}`` and ``GET /orders`` (the latest orders with their outcomes)."""

# No ``from __future__ import annotations``: FastAPI reads the routes' ``Annotated[...,
# Depends(auth.require(...))]`` parameters at definition time, and those name locals of
# router() that string annotations could not be resolved against.

import asyncio
import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse

from reactive_services import ClientProxy
from reactive_services.auth import Claims
from reactive_services.errors import BrokerError, RemoteError
from reactive_services.gateway import (
    BearerAuth,
    Requester,
    aggregate,
    part_error,
    problems,
    send_within,
    upstream_error,
)

from ..messages import MAX_PAGE, OrderCreated, OrderLine
from ..order_query import MAX_ORDER_ID_CHARS
from ._models import LatestOrders, OrderAccepted, OrderRequest, OrderView
from ._settings import GatewaySettings

log = logging.getLogger("reactive_services.examples.shop.gateway")

#: Parts of ``GET /orders/{id}``: part name -> the request pattern answering it.
ORDER_PARTS: Mapping[str, str] = {
    "order": "orders.get",
    "inventory": "inventory.get_order",
    "notifications": "notifications.get_order",
}
#: The type a non-null reply of each part must have.
_PART_TYPES: Mapping[str, type] = {"order": dict, "inventory": dict, "notifications": list}


def router(client: ClientProxy, requests: Requester, settings: GatewaySettings, auth: BearerAuth) -> APIRouter:
    """The orders routes: ``POST /orders`` emits through ``client``, ``GET /orders/{id}`` and
    ``GET /orders`` ask through ``requests``."""
    routes = APIRouter(tags=["orders"])

    @routes.post(
        "/orders",
        status_code=202,
        response_model=OrderAccepted,
        responses=problems(401, 403, 413, 503, 504),
        summary="Place an order (scope orders:write)",
    )
    async def place_order(
        order: OrderRequest,
        claims: Annotated[Claims, Depends(auth.require("orders:write"))],
    ) -> JSONResponse:
        """Publish ``order.created`` (an ``OrderCreated``: ``{"order_id", "items", "created_at",
        "customer_id"?}``) keyed by the new order id; answered once the broker acknowledged it."""
        order_id = uuid.uuid4().hex
        value = OrderCreated(
            order_id=order_id,
            items=[OrderLine(product_id=i.product_id, quantity=i.quantity) for i in order.items],
            created_at=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            customer_id=order.customer_id,  # None: left out of the record
        )
        try:
            async with asyncio.timeout(settings.call_timeout_s):
                await client.emit("order.created", value, key=order_id)
        except TimeoutError:
            raise HTTPException(
                504,
                f"the broker did not acknowledge order {order_id} within {settings.call_timeout_s} s;"
                " it may or may not have been accepted",
            ) from None
        except BrokerError as exc:
            raise upstream_error("order.created", exc, settings.call_timeout_s) from None
        log.info("order %s placed by %s", order_id, claims.sub)
        return JSONResponse(
            {"order_id": order_id, "status": "accepted"}, status_code=202, headers={"Location": f"/orders/{order_id}"}
        )

    @routes.get(
        "/orders/{order_id}",
        response_model=OrderView,
        responses=problems(401, 403, 404),
        summary="An order with its inventory outcome and notifications (scope orders:read)",
    )
    async def get_order(
        order_id: Annotated[str, PathParam(min_length=1, max_length=MAX_ORDER_ID_CHARS)],
        claims: Annotated[Claims, Depends(auth.require("orders:read"))],
    ) -> dict[str, Any]:
        """Asks ``orders.get``, ``inventory.get_order`` and ``notifications.get_order`` at once;
        a part that does not answer in time or fails is listed in ``missing`` (never a 5xx)."""
        parts = await aggregate(
            requests,
            ORDER_PARTS,
            {"order_id": order_id},
            timeout_s=settings.call_timeout_s,
            key=order_id,
            expect=_PART_TYPES,
        )
        values = parts.values
        if parts.complete and values["order"] is None and values["inventory"] is None and not values["notifications"]:
            raise HTTPException(404, f"unknown order {order_id!r}")
        return parts.view(order_id=order_id)

    @routes.get(
        "/orders",
        response_model=LatestOrders,
        responses=problems(401, 403, 422, 502, 503, 504),
        summary="The latest orders with their inventory outcome (scope orders:read)",
    )
    async def latest_orders(
        claims: Annotated[Claims, Depends(auth.require("orders:read"))],
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="orders, newest first")] = 50,
    ) -> dict[str, Any]:
        """Asks ``orders.latest`` (the order query service: the orders stored last, newest first),
        then ``inventory.get_outcomes`` for those orders: each order gets its ``outcome``
        (``{"status", "items", "reason"}``, null while not processed). Without the order query
        service's answer: 502 / 503 / 504; without the inventory's: 200 with every outcome null,
        ``"missing": ["inventory"]`` and the reason in ``errors``."""
        timeout = settings.call_timeout_s
        try:
            reply = await send_within(requests, "orders.latest", {"limit": limit}, timeout_s=timeout)
        except (TimeoutError, BrokerError, RemoteError) as exc:
            raise upstream_error("orders.latest", exc, timeout) from None
        if not isinstance(reply, Mapping) or not isinstance(reply.get("orders"), list):
            raise HTTPException(502, "orders.latest: unexpected reply")
        orders = [dict(o) for o in reply["orders"] if isinstance(o, Mapping) and isinstance(o.get("order_id"), str)]
        outcomes: Mapping[str, Any] = {}
        missing: list[str] = []
        errors: dict[str, str] = {}
        if orders:
            ids = [o["order_id"] for o in orders]
            try:
                answer = await send_within(requests, "inventory.get_outcomes", {"order_ids": ids}, timeout_s=timeout)
            except (TimeoutError, BrokerError, RemoteError) as exc:
                missing, errors = ["inventory"], {"inventory": part_error(exc, timeout)}
            else:
                if isinstance(answer, Mapping):
                    outcomes = answer
                else:
                    missing, errors = ["inventory"], {"inventory": "unexpected reply"}
        for order in orders:
            outcome = outcomes.get(order["order_id"])
            order["outcome"] = outcome if isinstance(outcome, Mapping) else None
        return {"orders": orders, "total": int(reply.get("total") or 0), "missing": missing, "errors": errors}

    return routes
