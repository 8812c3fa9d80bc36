"""Routes ``GET /logs/stats`` and ``GET /logs/alerts``: the history a dashboard draws first."""

# No ``from __future__ import annotations``: see _orders.py.

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query

from reactive_services import ClientProxy
from reactive_services.auth import Claims
from reactive_services.errors import BrokerError, RemoteError
from reactive_services.gateway import BearerAuth, problems, send_within, upstream_error

from ._settings import GatewaySettings


def router(client: ClientProxy, settings: GatewaySettings, auth: BearerAuth) -> APIRouter:
    """The log-analytics routes, sending through ``client``."""
    routes = APIRouter(tags=["logs"])

    async def latest(pattern: str, limit: int, source: str | None) -> list[dict[str, Any]]:
        timeout = settings.call_timeout_s
        payload: dict[str, Any] = {"limit": limit}
        if source is not None:
            payload["source"] = source
        try:
            reply = await send_within(client, pattern, payload, timeout_s=timeout)
        except (TimeoutError, BrokerError, RemoteError) as exc:
            raise upstream_error(pattern, exc, timeout) from None
        if not isinstance(reply, list):
            raise HTTPException(502, f"{pattern}: unexpected reply")
        return reply

    @routes.get(
        "/logs/stats",
        responses=problems(401, 403, 502, 503, 504),
        summary="The latest log.stats windows (scope logs:read)",
    )
    async def recent_log_stats(
        claims: Annotated[Claims, Depends(auth.require("logs:read"))],
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
        source: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    ) -> list[dict[str, Any]]:
        """Asks the log-analytics service (``logs.recent_stats``) for its latest window stats,
        oldest first: the history a dashboard draws before live ``log.stats`` events arrive."""
        return await latest("logs.recent_stats", limit, source)

    @routes.get(
        "/logs/alerts",
        responses=problems(401, 403, 502, 503, 504),
        summary="The latest log.alert values (scope logs:read)",
    )
    async def recent_log_alerts(
        claims: Annotated[Claims, Depends(auth.require("logs:read"))],
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        source: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    ) -> list[dict[str, Any]]:
        """Asks the log-analytics service (``logs.recent_alerts``) for its latest alerts, oldest first."""
        return await latest("logs.recent_alerts", limit, source)

    return routes
