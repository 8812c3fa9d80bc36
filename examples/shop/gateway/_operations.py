"""Routes ``GET /healthz``, ``GET /readyz`` and ``GET /metrics``."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from reactive_services.gateway import ReplyWarmup, readiness_report

from ._models import Readiness
from ._settings import GatewaySettings


def router(
    settings: GatewaySettings,
    warmup: ReplyWarmup,
    readiness: Callable[[], Awaitable[dict[str, Any]]] | None,
    metrics: Any | None,
) -> APIRouter:
    """Liveness, readiness (the warm-up of the reply consumers and ``readiness()``) and, when
    ``metrics`` is given, its rendering."""
    routes = APIRouter(tags=["operations"])

    @routes.get("/healthz", summary="Liveness: 200 while the process runs")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @routes.get(
        "/readyz",
        response_model=Readiness,
        responses={503: {"model": Readiness}},
        summary="Readiness: 200 when every check is true, else 503",
    )
    async def readyz() -> JSONResponse:
        ok, body = await readiness_report(warmup, readiness, timeout_s=settings.readiness_timeout_s)
        return JSONResponse(body, status_code=200 if ok else 503)

    if metrics is not None:

        @routes.get("/metrics", include_in_schema=False)
        async def metrics_endpoint() -> Response:
            rendered = metrics.render()
            if inspect.isawaitable(rendered):
                rendered = await rendered
            return Response(rendered, media_type=getattr(metrics, "content_type", "text/plain; charset=utf-8"))

    return routes
