"""Route ``GET /vendor/plotly.min.js``: the chart library of the dashboard, served by the gateway.

The dashboard draws its charts with plotly.js. The browser gets it from the gateway, never from a
CDN, and the repository holds none of its code: the file is the ``plotly.min.js`` that the
``plotly`` package from PyPI ships (``plotly/package_data/plotly.min.js``, a dependency of this
package), so ``pip install reactive-services`` is all a user needs for ``serve`` to draw them.
"""

# No ``from __future__ import annotations``: see _orders.py.

import importlib.util
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from reactive_services.gateway import problems

#: Where the dashboard loads plotly.js from (relative to the gateway's root).
PLOTLY_PATH = "/vendor/plotly.min.js"


def plotly_js() -> Path | None:
    """The ``plotly.min.js`` of the installed ``plotly`` package (found without importing it),
    or None when the package is not installed or ships no such file."""
    spec = importlib.util.find_spec("plotly")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / "package_data" / "plotly.min.js"
        if path.is_file():
            return path
    return None


def router() -> APIRouter:
    """``GET /vendor/plotly.min.js`` (no scope: a public library); 404 naming the remedy when
    the ``plotly`` package is missing."""
    routes = APIRouter(tags=["dashboard"])
    path = plotly_js()

    @routes.get(
        PLOTLY_PATH,
        response_class=FileResponse,
        responses=problems(404),
        summary="plotly.js, the dashboard's chart library (from the plotly package)",
    )
    async def plotly() -> FileResponse:
        """The file the ``plotly`` package ships, cached by the browser for a day."""
        if path is None:
            raise HTTPException(404, "plotly.js is not installed: pip install plotly")
        return FileResponse(path, media_type="text/javascript", headers={"Cache-Control": "public, max-age=86400"})

    return routes
