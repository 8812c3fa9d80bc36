"""Routes that publish what the deployment is: its AsyncAPI document and its topology picture."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

from reactive_services.asyncapi import Deployment, asyncapi_document, dumps
from reactive_services.topology import render_svg, topology

__all__ = ["describe_router"]


def describe_router(deployment: Deployment) -> APIRouter:
    """``GET /asyncapi.json``, ``GET /asyncapi.yaml`` (the AsyncAPI 3.0 document of
    ``deployment``) and ``GET /topology.svg`` (its topology drawn by Graphviz; **503** with the
    reason when ``dot`` is missing). Each is built on first request and kept (the deployment's
    declarations do not change while it runs). No authentication: they say which topics and
    payloads exist, nothing about their contents.

    Raises:
        ConfigError: when first requested, a payload type that cannot be described (a 500
            for that request, logged by the server).
    """
    routes = APIRouter(tags=["description"])
    cache: dict[str, bytes] = {}

    def document() -> dict[str, Any]:
        return asyncapi_document(deployment)

    @routes.get("/asyncapi.json", summary="The AsyncAPI 3.0 document of the deployment (JSON)")
    async def asyncapi_json() -> Response:
        if "json" not in cache:
            cache["json"] = dumps(document(), "json")
        return Response(cache["json"], media_type="application/json")

    @routes.get("/asyncapi.yaml", summary="The AsyncAPI 3.0 document of the deployment (YAML)")
    async def asyncapi_yaml() -> Response:
        if "yaml" not in cache:
            cache["yaml"] = dumps(document(), "yaml")
        return Response(cache["yaml"], media_type="application/yaml")

    @routes.get("/topology.svg", summary="Which service consumes and produces which topic (SVG)")
    async def topology_svg() -> Response:
        if "svg" not in cache:
            dot = topology(deployment).to_dot()
            try:
                cache["svg"] = await asyncio.to_thread(render_svg, dot)
            except Exception as exc:  # noqa: BLE001 - dot missing or failing: say so, the rest works
                raise HTTPException(503, f"the topology cannot be drawn: {exc}") from exc
        return Response(cache["svg"], media_type="image/svg+xml")

    return routes
